"""The structured results of the output-side tools and of a unit's export, described for the agent.

- :class:`FindByOutputOutput`: ``find_by_output``, the neurons whose output direction promotes
  (or suppresses) given tokens, from the model's output-token file (``store/logitfile.py``);
- :class:`OutputEffectsOutput`: ``output_effects``, one neuron's measured effect on the next token
  beside its direct path (``store/effects.py``);
- :class:`NeuronExport`: ``export_neuron``, a unit's record in an open shape close to
  Neuronpedia's feature export (its field names where the meaning is the same).

Kept apart from ``n2g_mcp.outputs`` (the other tools' results), which ``get_graph`` and
``top_activations`` extend with the :class:`store.logitfile.OutputTokens` they now carry.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from store.effects import OutputEffects
from store.logitfile import OutputTokens
from store.metrics import Rounded

# --------------------------------------------------------------------- find_by_output


class OutputHit(BaseModel):
    """A neuron whose output direction moves the asked tokens' logits."""

    id: str = Field(description="neuron id, e.g. L3/N1024")
    layer: int
    neuron: int
    matched: list[str] = Field(description="the vocabulary tokens matched, one per asked token, in the order asked")
    ranks: list[int] = Field(description="each matched token's rank in the neuron's list (0: its first)")
    strength: Rounded = Field(description="mean size of the matched tokens' logit change per unit of activation "
                              "(direct path; a promoted token's rise, a suppressed token's fall)")
    at_max: Rounded | None = Field(description="strength x the neuron's largest corpus activation: how hard it "
                                   "pushes the tokens when it fires as strongly as anywhere, before the final "
                                   "norm's per-token division (a ranking, not a logit change to read "
                                   "literally); null without a scan. Results are ranked by it where known")
    promoted: list[str] = Field(description="the neuron's first promoted tokens (up to 5)")
    suppressed: list[str] = Field(description="the neuron's first suppressed tokens (up to 5)")
    has_graph: bool = Field(description="whether a graph is stored for it (get_graph reads it)")
    activating_tokens: list[str] = Field(default_factory=list, description="its graph's top activating "
                                         "tokens: what makes it fire (empty without a graph)")
    f1: Rounded | None = Field(default=None, description="its graph's F1 on held-out examples")


class FindByOutputOutput(BaseModel):
    model: str
    promotes: list[str] = Field(description="tokens asked to be promoted")
    suppresses: list[str] = Field(description="tokens asked to be suppressed")
    top_k: int = Field(description="length of each neuron's lists searched: a neuron is found only where "
                       "every asked token is among its top_k promoted (or suppressed) tokens")
    ranked_by: str = Field(description="'at_max' (with the scan) or 'strength'")
    results: list[OutputHit]
    total: int = Field(description="neurons matching, over all pages")
    offset: int = Field(default=0, description="position of this page's first result in all of them")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


# --------------------------------------------------------------------- output_effects
class OutputEffectsOutput(OutputEffects):
    """One neuron's output, measured on its own top windows, beside the weights' direct path."""

    id: str
    model: str
    scale: Rounded = Field(description="the raised edit sets the neuron to scale x its corpus max")
    max_activation: Rounded = Field(description="the neuron's largest corpus activation (raw)")


# --------------------------------------------------------------------- export_neuron
class ActivationRecord(BaseModel):
    """One top corpus window, as Neuronpedia's feature export lists activations."""

    tokens: list[str]
    values: list[float | None] = Field(description="raw activation per token: the scan keeps the pivot's "
                                       "value only, so every other position is null")
    maxValue: Rounded = Field(description="the window's largest activation (raw), at maxValueTokenIndex")  # noqa: N815
    maxValueTokenIndex: int  # noqa: N815


class ExplanationRecord(BaseModel):
    """An explanation of the unit with its scores (here: its N2G graph and the graph's fidelity)."""

    description: str
    typeName: str = Field(description="what produced it: 'n2g-graph'")  # noqa: N815
    scores: dict[str, Rounded | None] = Field(description="the graph's fidelity on held-out top examples: "
                                              "precision, recall, f1, correlation")


class NeuronExport(BaseModel):
    """A unit's record in an open shape close to Neuronpedia's feature export."""

    modelId: str = Field(description="the model, as this server names it")  # noqa: N815
    layer: int
    index: int = Field(description="the neuron's index in its layer")
    id: str = Field(description="n2g-mcp's neuron id, e.g. L3/N1024")
    hookName: str = Field(description="where activations were read, e.g. blocks.3.mlp.hook_post")  # noqa: N815
    maxActApprox: Rounded | None = Field(description="largest activation in the scanned corpus (raw)")  # noqa: N815
    frac_firing: Rounded | None = Field(description="share of corpus tokens at >= 0.5 x the max (n2g's "
                                        "firing density; not Neuronpedia's frac_nonzero)")
    pos_str: list[str] = Field(description="tokens its output direction promotes most (direct path)")
    pos_values: list[Rounded] = Field(description="their logit change per unit of activation")
    neg_str: list[str] = Field(description="tokens it suppresses most")
    neg_values: list[Rounded]
    activations: list[ActivationRecord] = Field(description="top corpus windows, strongest first")
    explanations: list[ExplanationRecord] = Field(description="its N2G graph as an explanation, where stored")
    source: str = Field(description="what made this record, with where the output tokens come from")


def output_fields(output: OutputTokens | None) -> dict[str, list]:
    """The ``pos_``/``neg_`` fields of an export from a neuron's output tokens (empty without)."""
    if output is None:
        return {"pos_str": [], "pos_values": [], "neg_str": [], "neg_values": []}
    return {"pos_str": [t.token for t in output.promoted], "pos_values": [t.value for t in output.promoted],
            "neg_str": [t.token for t in output.suppressed], "neg_values": [t.value for t in output.suppressed]}
