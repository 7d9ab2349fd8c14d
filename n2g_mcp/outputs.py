"""The structured results of the MCP tools: one pydantic model per tool, described for the agent.

Each model becomes its tool's ``outputSchema``; the tool also returns a short text summary
(``n2g_mcp.text``). ``n2g_mcp.queries`` makes them, from store records through the ``of``
constructors here. The items of the probes' results are the probes' own records
(``store.probes``), with what the server adds (whether a graph is stored); fidelity is
``store.metrics.Figures``. Every float is rounded once, where its record is made
(:data:`store.metrics.Rounded`). Neurons are always named ``L{layer}/N{neuron}``; activations are
normalised (raw activation / the neuron's largest activation in the corpus) unless a field says
"raw".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from n2g_mcp.limits import HIT_TOKENS, TOKENS_SHOWN
from store.describe import describe_graph
from store.graph import Example, HeldoutFidelity, NeuronGraph
from store.logitfile import OutputTokens
from store.metrics import Figures, Rounded
from store.probes import (
    MIN_COPY,
    NIL_EFFECT,
    CoactiveNeuron,
    CopyLosses,
    FiringHit,
    InductionScore,
    MarkedWindow,
    NeuronEffect,
    PredictionChange,
    SetScores,
    TokenChange,
)
from store.scanfile import NeuronStats
from store.sqlsearch import Hit
from store.tokens import matched_first, repeated_tokens

VIEWER_URL = ("the neuron's page in the local browser viewer (graph drawn, top activations shaded, "
              "a box to test text), to hand a person; null where the server links to no viewer")
HasGraph = Annotated[bool, Field(description="whether a graph is stored for it (get_graph reads it)")]
By = Literal["tokens", "coactivation", "both"]
"""How find_similar_neurons finds neighbours: graphs' token-set overlap, co-activation, or both."""
Expectation = Literal["fire", "silent"]
"""What predict_activations' caller expects the neuron to do on its text (the test it wrote)."""


# --------------------------------------------------------------------- list_models
class StoredUnits(BaseModel):
    """A model's units (its neurons, or one dictionary's latents): their stores here and whether
    their graphs can be built."""

    graphs: int = Field(description="units with a graph in the stores")
    layers: list[int] = Field(description="layers that have at least one graph")
    partial: bool = Field(default=False, description="the stores are still being indexed: graphs and layers "
                          "count only the graphs indexed so far; call again in a minute")
    n_layers: int | None = Field(description="layers of the model, where known without loading it")
    d_mlp: int | None = Field(description="units per layer (neurons, or a dictionary's latents), where known "
                              "without loading it")
    files: list[str] = Field(description="store files holding them, in merge order (later wins)")
    corrupt_lines: int = Field(description="store lines skipped because they do not parse")
    corrupt: list[str] = Field(description="which lines were skipped and why")
    can_build: bool = Field(description="whether build_graph and predict_activations(compare=true) work here")
    build_note: str | None = Field(description="why not, where they do not")


class DictionaryInfo(StoredUnits):
    """One of a model's dictionaries (SAE or transcoder latents)."""

    units: str = Field(description="its name: pass it as `units` to every tool (ids then read L7/F12)")
    quality: dict[str, Any] | None = Field(default=None, description="its quality on held-out text, per "
                                           "layer: fvu (fraction of variance unexplained), l0 (latents "
                                           "active a token), dead (latents never active), loss_clean / "
                                           "loss_spliced / loss_zeroed (next-token loss with the "
                                           "reconstruction spliced in, or the hook zeroed) and recovered "
                                           "(share of the zeroing's loss the splice wins back)")


class ModelInfo(StoredUnits):
    """One model: its neurons' stores, its dictionaries, and whether graphs can be built for it."""

    model: str
    default: bool = Field(description="the model tools use when none is named")
    dictionaries: list[DictionaryInfo] = Field(default_factory=list, description="its dictionaries served or "
                                               "stored here, each with its own graphs and quality")


class ListModelsOutput(BaseModel):
    stores_dir: str | None = Field(description="the directory the server reads stores from; null where it does "
                                   "not show its folders to clients (over HTTP, unless its operator asks)")
    models: list[ModelInfo]
    problems: list[str] = Field(description="files that are not readable stores")


# --------------------------------------------------------------------- graphs
class GraphSummary(BaseModel):
    """A neuron's graph at a glance: what fires it, in what context, and how well it predicts."""

    id: str = Field(description="neuron id, e.g. L3/N1024")
    model: str
    layer: int
    neuron: int
    activating_tokens: dict[str, Rounded] = Field(
        description="tokens the neuron fires on -> largest normalised activation, strongest first")
    context_tokens: dict[str, Rounded] = Field(
        description="earlier tokens that make it fire -> largest importance, most important first. "
        "Importance is the paper's saliency: 1 - (activation with the token masked) / activation; 1 "
        "means masking it removes the whole activation, above 1 that masking drives the activation "
        "below zero (seen where the activation is small), so it is not on the activations' 0-1 scale")
    description: str = Field(
        default="", description="the graph in words, made from its trie when read (the same graph "
        "always reads the same): what it fires on, after which context, and its strongest path")
    activating_total: int = Field(description="activating tokens in the graph (the map shows the top ones)")
    context_total: int = Field(description="context tokens in the graph (the map shows the top ones)")
    fidelity: Figures | None = Field(
        description="N2G on its held-out top-activating examples (the paper's Table 1 measure)")
    fidelity_with_negatives: Figures | None = Field(
        description="N2G on held-out examples plus random text as negatives (harder, more honest)")
    fidelity_ordinary_text: HeldoutFidelity | None = Field(
        default=None, description="on ordinary text the build never read (held-out documents): every token, "
        "and the interval protocol, beside the token-lookup floor a graph must beat; None for graphs built "
        "before it (n2g build --ordinary)")
    built: bool = Field(default=False, description="true when this call built the graph, false when it was stored")
    viewer_url: str | None = Field(default=None, description=VIEWER_URL)

    @classmethod
    def of(cls, graph: NeuronGraph, built: bool = False, viewer_url: str | None = None) -> GraphSummary:
        """The summary of a stored or just-built graph, linking to its page where given."""
        fid = graph.fidelity
        return cls(
            id=graph.id, model=graph.model, layer=graph.layer, neuron=graph.neuron,
            activating_tokens=dict(list(graph.activating_tokens.items())[:TOKENS_SHOWN]),
            context_tokens=dict(list(graph.context_tokens.items())[:TOKENS_SHOWN]),
            description=describe_graph(graph),
            activating_total=len(graph.activating_tokens), context_total=len(graph.context_tokens),
            fidelity=None if fid is None else fid.n2g.top,
            fidelity_with_negatives=None if fid is None else fid.n2g.random,
            fidelity_ordinary_text=None if fid is None else fid.heldout,
            built=built, viewer_url=viewer_url,
        )


class ExampleView(BaseModel):
    """A text window with its activating token marked [[like this]]."""

    text: str = Field(description="the window, pivot token wrapped in [[ ]]; '…' where cut")
    pivot_token: str
    activation: Rounded = Field(description="normalised activation on the pivot token")
    raw_activation: Rounded
    split: str | None = Field(default=None, description="'train' (used to build) or 'test' (held out)")
    important_tokens: list[str] = Field(
        default_factory=list, description="context tokens whose masking most lowers the activation")

    @classmethod
    def of(cls, example: Example, max_activation: float, before: int = 40, after: int = 10) -> ExampleView:
        """An example as text with the pivot wrapped in [[ ]], cut to ``before``/``after`` tokens."""
        tokens, p = example.tokens, example.pivot
        start, end = max(0, p - before), min(len(tokens), p + 1 + after)
        shown = ("…" if start else "") + "".join(tokens[start:p]) + "[[" + tokens[p] + "]]" \
            + "".join(tokens[p + 1:end]) + ("…" if end < len(tokens) else "")
        important: list[str] = []
        if example.importances:
            ranked = sorted(((w, i) for i, w in enumerate(example.importances) if i != p and w > 0), reverse=True)
            important = [tokens[i] for w, i in ranked[:5] if i < len(tokens)]
        norm = example.activation / max_activation if max_activation > 0 else 0.0
        return cls(text=shown, pivot_token=tokens[p], activation=norm, raw_activation=example.activation,
                   split=example.split, important_tokens=important)

    @staticmethod
    def distinct(views: list[ExampleView]) -> list[ExampleView]:
        """Views with different texts, the first of each kept (pruning often leaves the same few tokens)."""
        seen: set[str] = set()
        return [v for v in views if not (v.text in seen or seen.add(v.text))]


class GraphDescription(GraphSummary):
    """A neuron's graph in full enough detail to explain it."""

    hook: str = Field(description="where activations were read, e.g. blocks.3.mlp.hook_post")
    max_activation: Rounded = Field(description="raw activation that normalises to 1.0")
    paths: int = Field(description="paths (activating token plus context) in the graph")
    depth: int = Field(description="longest path, in tokens")
    matching: str = Field(description="how the graph matches text: 'all' paths or 'greedy'; normalised or exact")
    baselines_f1: dict[str, Rounded | None] = Field(
        description="F1 of the paper's baselines on the same examples: token_lookup, ngram_lookup")
    examples: list[ExampleView] = Field(description="pruned training examples: the least context that fires it")
    output: OutputTokens | None = Field(default=None, description="what it writes: the tokens its output "
                                        "direction promotes and suppresses most (direct path, from the model's "
                                        "output-token file); null where the server has none")
    warnings: list[str] = Field(default_factory=list, description="problems with the store (corrupt lines)")


# --------------------------------------------------------------------- search
class SearchHit(BaseModel):
    id: str = Field(description="neuron id, e.g. L3/N1024")
    layer: int
    neuron: int
    activating_tokens: list[str] = Field(
        description=f"activating tokens (up to {HIT_TOKENS}): those the query matched first, then the strongest")
    activating_total: int = Field(default=0, description="activating tokens in the graph (the list shows "
                                  f"up to {HIT_TOKENS})")
    context_tokens: list[str] = Field(description=f"most important context tokens (up to {HIT_TOKENS})")
    context_total: int = Field(default=0, description="context tokens in the graph")
    f1: Rounded | None = Field(description="N2G F1 on held-out top examples; null where not scored")
    ordinary_f1: Rounded | None = Field(
        default=None, description="F1 on ordinary text (every token of held-out documents); null where not scored")
    ordinary_r: Rounded | None = Field(
        default=None, description="correlation with the neuron on ordinary text; null where not scored")
    repeated_tokens: list[str] = Field(
        default_factory=list, description="with repeated=true, its signs of in-context behaviour: "
        "'<repeat>' for a repeat path (fires on what continues an earlier copy), then every token both "
        "activating and context, spelled exactly alike")
    explained: Rounded | None = Field(
        default=None, description="how much of the graph the query's activating tokens explain: their "
        "activation relative to the graph's strongest activating token (mean over the query's tokens; "
        "1.0: the query holds what fires it most); results are ranked by it, then by F1. Null without "
        "activating tokens")
    viewer_url: str | None = Field(default=None, description=VIEWER_URL)

    @classmethod
    def of(cls, hit: Hit, repeated: bool, exact: bool, activating: Sequence[str] = ()) -> SearchHit:
        """A search hit from the index's record of a graph, the tokens ``activating`` matched first."""
        return cls(id=hit.id, layer=hit.layer, neuron=hit.neuron,
                   activating_tokens=matched_first(hit.activating_tokens, activating, exact)[:HIT_TOKENS],
                   activating_total=len(hit.activating_tokens),
                   context_tokens=hit.context_tokens[:HIT_TOKENS], context_total=len(hit.context_tokens),
                   f1=hit.f1, ordinary_f1=hit.ordinary_f1, ordinary_r=hit.ordinary_r,
                   repeated_tokens=repeated_tokens(hit) if repeated else [], explained=hit.explained)


class SearchOutput(BaseModel):
    model: str
    results: list[SearchHit]
    total: int = Field(description="graphs matching the query, over all pages")
    offset: int = Field(default=0, description="position of the first result of this page in all of them")
    searched: int = Field(default=0, description="graphs of the model searched")
    next_cursor: str | None = Field(description="pass as cursor to get the next page; null on the last page")
    warnings: list[str] = Field(default_factory=list, description="problems with the store (corrupt lines)")
    partial: bool = Field(default=False, description="the stores are still being indexed: these results "
                          "cover only the graphs indexed so far; call again for all")


# --------------------------------------------------------------------- similar
class SimilarItem(BaseModel):
    id: str = Field(description="neuron id of the similar neuron")
    layer: int
    neuron: int
    similar_to: str = Field(description="the neuron it resembles: the target, or its pair partner")
    activating_overlap: Rounded = Field(description="overlap of activating token sets (containment in subset mode)")
    context_overlap: Rounded = Field(description="overlap of context token sets (containment in subset mode)")


class CoactiveHit(CoactiveNeuron):
    """A neuron that fires with the target, and what its stored graph says."""

    has_graph: HasGraph
    activating_tokens: list[str] = Field(default_factory=list, description="its graph's top activating tokens "
                                         f"(up to {HIT_TOKENS})")
    f1: Rounded | None = Field(default=None, description="its graph's F1 on held-out examples")
    ordinary_f1: Rounded | None = Field(
        default=None, description="its graph's F1 on ordinary text (every token of held-out documents), where scored")


class Coactivated(BaseModel):
    """The neurons that fire with the target, whatever tokens their graphs name."""

    source: Literal["model", "scan"] = Field(
        description="'model': Pearson correlation of activations measured on the model; 'scan': ranked by the "
        "target's top windows (and peak tokens) they share in the whole-model scan, no model run")
    why_scan: str | None = Field(default=None, description="where source is 'scan', why the model was not run")
    layers: list[int] = Field(description="layers searched")
    top_windows: int = Field(description="the target's top windows compared (from the scan)")
    random_windows: int = Field(default=0, description="random build-split windows read beside them (model)")
    tokens: int = Field(default=0, description="tokens each correlation is over (model)")
    heldout_left_out: int = Field(default=0, description="the target's top windows left out: from held-out "
                                  "documents, which no measure reads")
    results: list[CoactiveHit] = Field(description="most correlated (model) or most shared (scan) first")


class SimilarOutput(BaseModel):
    model: str
    target: str | None = Field(description="the neuron compared against; null when listing similar pairs")
    layer: int | None = Field(default=None, description="the layer the pairs were limited to, if any")
    mode: str
    threshold: float
    compared: int = Field(default=0, description="graphs compared")
    neurons: int | None = Field(default=None, description="neurons of the model (layers x neurons per "
                                "layer) where known: compared == neurons means every neuron has a graph here")
    by: By = Field(
        default="tokens", description="how neighbours were found: token-set overlap (results), co-activation "
        "(coactivation), or both")
    results: list[SimilarItem] = Field(description="neurons whose graphs' token sets overlap the target's (by "
                                       "'tokens' or 'both')")
    coactivation: Coactivated | None = Field(default=None, description="neurons that fire with the target (by "
                                             "'coactivation' or 'both'; null where not asked or not measurable)")
    nearest: SimilarItem | None = Field(
        default=None, description="for a target where no neuron reaches the threshold, the closest one found "
        "(its smaller overlap highest), below the threshold; null where any result passes or no graph "
        "shares an activating token with the target")
    warnings: list[str] = Field(default_factory=list)
    partial: bool = Field(default=False, description="the results are not the whole answer, the warnings say "
                          "why: the stores are still being indexed (call again for all), or the search for "
                          "pairs reached its work limit (narrow it as they say)")


# --------------------------------------------------------------------- render
class RenderOutput(BaseModel):
    id: str
    model: str
    dot: str = Field(description="Graphviz DOT source with a legend; render with `dot -Tsvg`. Node numbers: "
                     "activation (red, share of the neuron's max) or importance (blue, 1 - activation with "
                     "the token masked / activation, not capped at 1)")
    nodes: int = Field(description="nodes of the whole graph as drawn (IGNOREs removed)")
    shown_nodes: int = Field(description="nodes in this drawing")
    paths: int
    shown_paths: int
    max_nodes: int = Field(description="the node cap this drawing used")
    requested_max_nodes: int = Field(default=0, description="the node cap asked for")
    image: str | None = Field(default=None, description="the drawing's format where one was attached "
                              "as content ('png' or 'svg'), else null")
    warnings: list[str] = Field(default_factory=list, description="problems with the store (corrupt lines)")


# --------------------------------------------------------------------- examples
class TopActivationsOutput(BaseModel):
    id: str
    model: str
    max_activation: Rounded = Field(description="raw activation that normalises to 1.0")
    examples: list[ExampleView] = Field(description="top-activating corpus windows, strongest first")
    total: int = Field(description="stored examples of this neuron")
    source: str = Field(default="graph", description="'scan' (the model's whole-corpus scan: any neuron) "
                        "or 'graph' (the examples stored with its graph)")
    stats: NeuronStats | None = Field(default=None, description="firing density and quantiles "
                                          "(from the scan)")
    output: OutputTokens | None = Field(default=None, description="what it writes: the tokens its output "
                                        "direction promotes and suppresses most (direct path); null where the "
                                        "server has no output-token file")
    offset: int = Field(default=0, description="position of the first example of this page")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")
    warnings: list[str] = Field(default_factory=list, description="problems with the store (corrupt lines)")


# --------------------------------------------------------------------- predict
class TokenRow(BaseModel):
    index: int
    token: str
    predicted: Rounded
    actual: Rounded | None = None
    path: list[str | None] | None = Field(
        default=None, description="why the graph predicts it: the graph path that matched, in text "
        "order (its context tokens, null where any token may stand, then the activating token; "
        "'<repeat>' for a repeat node); null where no path matched")


class TextPrediction(BaseModel):
    """The graph's prediction (and with compare the real neuron) on one text."""

    tokens: list[str] = Field(default_factory=list, description="the text's tokens, as the graph sees them")
    predicted: list[Rounded] = Field(default_factory=list, description="the graph's normalised activation per token")
    actual: list[Rounded] | None = Field(
        default=None, description="the real neuron per token, raw / max_activation (compare=true only)")
    agreement: Figures | None = Field(default=None, description="predicted vs actual (compare=true only)")
    firing: list[TokenRow] = Field(
        default_factory=list, description="tokens predicted or (with compare) found to fire, >= 0.5, with "
        "the path that matched; at most 100")
    firing_total: int = Field(default=0, description="tokens predicted or found to fire, all of them")
    expect: Expectation | None = Field(default=None, description="what the caller expected of this text: "
                                       "'fire' (a positive test), 'silent' (a negative one), or null")
    as_expected: bool | None = Field(
        default=None, description="with expect: whether the neuron did so (fires: some token >= 0.5 of its "
        "max): the real neuron with compare=true, else the graph's prediction; null without expect")


class PredictOutput(TextPrediction):
    """One text's prediction in the fields above; with several texts, one result each in
    ``results`` and, with compare, the agreement over all of them in ``agreement``."""

    id: str
    model: str
    results: list[TextPrediction] = Field(
        default_factory=list, description="with several texts, one result per text, in order (the "
        "token fields above are then empty and agreement pools every text); empty for one text")


# --------------------------------------------------------------------- the whole-model probes
class FindHit(FiringHit):
    """A neuron active at the chosen token."""

    has_graph: HasGraph
    activating_tokens: list[str] = Field(default_factory=list, description="its graph's top activating tokens "
                                         f"(up to {HIT_TOKENS})")
    activating_total: int = Field(default=0, description="activating tokens in its graph")
    f1: Rounded | None = Field(default=None, description="its graph's F1 on held-out examples")


class FindNeuronsOutput(BaseModel):
    model: str
    token: str = Field(description="the token looked at")
    position: int = Field(description="its index in the text's tokens")
    tokens: int = Field(description="tokens in the text")
    layers: list[int]
    results: list[FindHit] = Field(description="most active first")


class InductionHit(InductionScore):
    """A neuron's induction score, and whether a graph is stored for it."""

    has_graph: HasGraph


class InductionOutput(BaseModel):
    model: str
    layers: list[int]
    sequences: int = Field(description="random sequences per seed")
    length: int = Field(description="tokens per sequence, before its copy")
    seed: int = Field(description="the first seed")
    seeds: list[int] = Field(default_factory=list, description="every seed merged (one set of sequences each)")
    token_ids: str = Field(default="", description="where the random token ids come from")
    loss_first_copy: Rounded | None = Field(default=None, description="the model's mean next-token loss "
                                            "(nats) on the first copies: random tokens, about log(vocab)")
    loss_second_copy: Rounded | None = Field(default=None, description="the same on the second copies: far "
                                             "lower where the model copies at these settings")
    threshold_source: str = Field(description="what 'fires' was measured against: the corpus scan's max, "
                                  "or the probe's own max where no scan is served")
    results: list[InductionHit] = Field(description="best (highest score) first")
    seconds: Rounded


class AblationOutput(BaseModel):
    model: str
    neurons: list[str]
    mode: str
    measured_on: str = Field(description="'repeated-sequence probe (second copies)' or 'the given text'")
    seed: int | None = Field(default=None, description="the probe's seed (its random sequences); null on a text")
    tokens_measured: int
    loss_clean: Rounded = Field(description="mean next-token loss (nats) of the intact model (on the probe: "
                                "on the second copies)")
    loss_first_copy: Rounded | None = Field(default=None, description="on the probe, the intact model's loss on "
                                            "the first copies; far above loss_clean where the model copies")
    loss_ablated: Rounded
    delta: Rounded = Field(description="loss_ablated - loss_clean")
    control_draws: int = Field(default=0, description="random controls compared: draws of as many neurons "
                               "of the same layers, each ablated on the same tokens; 0 without control")
    control_neurons: list[str] = Field(description="the first draw's neurons (the seed draws the same again)")
    control_delta: Rounded | None = Field(description="the draws' mean delta; null without control")
    control_spread: Rounded | None = Field(default=None, description="the standard deviation of the draws' "
                                           "deltas (n - 1); null for fewer than two draws")
    control_deltas: list[Rounded] = Field(default_factory=list, description="every draw's delta")
    rank_among_controls: int | None = Field(
        default=None, description="delta's rank among the draws' deltas: 1 where it exceeds all of them, "
        "control_draws + 1 where none is below it; null without control")
    each: list[NeuronEffect] = Field(default_factory=list, description="with each=true, every neuron "
                                     "ablated alone, largest delta first, with its place in neurons as given")
    no_effect: list[str] = Field(default_factory=list, description=f"with each=true, the neurons whose own "
                                 f"delta is nil or negative (<= {NIL_EFFECT} nats): they carry nothing alone here")
    copies: CopyLosses | None = Field(default=None, description="on a given text that holds a span of at least "
                                      f"{MIN_COPY} tokens twice, the loss on each copy (as on the probe); null "
                                      "otherwise")
    top_changes: list[TokenChange] = Field(description="tokens whose loss changed most")
    seconds: Rounded = Field(default=0.0, description="time the model's passes took")


class SteerOutput(BaseModel):
    model: str
    neurons: list[str]
    scale: Rounded = Field(description="each neuron is clamped to scale x its corpus max")
    values: list[Rounded] = Field(description="the raw activation each neuron was held at, in the order of neurons")
    prompt_tokens: int
    max_new_tokens: int
    clean_text: str = Field(description="greedy continuation of the prompt by the intact model")
    steered_text: str = Field(description="greedy continuation with the neurons clamped at every position")
    clean_tokens: list[str]
    steered_tokens: list[str]
    first_difference: int | None = Field(description="index of the first generated token that differs; null "
                                         "where the continuations are the same")
    changes: list[PredictionChange] = Field(description="positions of the prompt and clean continuation "
                                            "whose next-token prediction changed most, largest KL first")


class HypothesisOutput(BaseModel):
    id: str
    model: str
    pattern: str
    kind: str
    overall: Figures = Field(description="the claim scored over all three sets together")
    sets: list[SetScores]
    corpus_windows_matched: int = Field(description="corpus windows where the pattern claims a token")
    false_positives: list[MarkedWindow] = Field(description="claimed tokens where the neuron does not fire, "
                                              "weakest first")
    false_negatives: list[MarkedWindow] = Field(description="firing tokens the pattern misses, strongest first")


