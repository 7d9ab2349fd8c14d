"""What the whole-model probes return: typed, torch-free results.

The probes themselves run the model (``builder.probes.firing``, ``builder.probes.induction``,
``builder.probes.ablate``, ``builder.probes.steer``, ``builder.probes.hypothesis``); their
results are defined here, outside the builder, so that the server's interface to the live model
(``n2g_mcp.live.LiveBackend``), the builder that implements it and the test doubles share one
typed contract and the server never imports torch to read them.

Two kinds of record:

- the items a tool lists (a neuron's induction score, a token whose loss changed, a marked
  window, ...) are pydantic models described for the agent: the tools return them as they are
  (``n2g_mcp.outputs`` adds only what the server knows, such as whether a graph is stored), and
  each float is rounded once, when the item is made (:data:`store.metrics.Rounded`), so a
  producer ranks its items before it makes them;
- the whole result of a probe (:class:`InductionProbe`, :class:`Ablation`, :class:`Steering`,
  :class:`HypothesisResult`) is a dataclass at full precision, which the queries
  (``n2g_mcp.probe_queries``) turn into a tool's result.

Layer and neuron indices are plain ``int`` whatever the producer passed (numpy indices from an
``argsort`` included): they are used as SQL parameters and JSON values, where a numpy integer
silently matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from store.metrics import Figures, Rounded, Scores
from store.names import keyed_id, neuron_id

PatternKind = Literal["regex", "tokens"]
"""How test_hypothesis reads a pattern: a regular expression over the text, or ``|``-separated tokens."""
AblationMode = Literal["zero", "mean"]
"""How a neuron is ablated: set to 0, or to its mean over random corpus windows."""
BuildMethod = Literal["ordinary", "fitted"]
"""How a live build makes a graph: ``ordinary``, the served atlas's method (the fitted paths
calibrated on ordinary text, scored on held-out documents too: ``builder.stages.ordinary``), or
``fitted``, the paper's (fitted on the top windows only: faster, describes the top of the range)."""
Neuron = tuple[int, int]
"""``(layer, neuron)``."""
PROBE_SEQUENCES, PROBE_LENGTH, PROBE_SEEDS = 16, 40, (0, 1, 2)
"""The induction probe's default size (``builder.probes.induction``): 16 random sequences of 40 tokens,
each then repeated, for each of 3 seeds. ablate_neurons' default test is the first seed's."""
CONTROL_DRAWS = 8
"""Random controls an ablation is compared with by default: 8 draws of as many neurons of the same
layers, so that the effect is read against their mean and spread and ranked among them (one draw's
delta, often near 0, made ratios like "73.8x the control" out of noise; issue 27)."""
MIN_COPY = 6
"""Fewest tokens a span of a given text must have, seen twice, for an ablation to measure its
copies apart (as the probe does): shorter repeats ("of the") are ordinary text, not a copy."""
NIL_EFFECT = 0.005
"""Nats: a neuron whose own ablation (each=true) raises the loss by no more than this carries
nothing alone, here."""
REGEX_CPU_S = 5.0
"""CPU seconds of its thread a test_hypothesis regex may take over the whole corpus
(``builder.probes.hypothesis``): the work it takes decides, not how busy the machine is."""


def _neurons(pairs: list[tuple[int, int]]) -> list[Neuron]:
    return [(int(layer), int(neuron)) for layer, neuron in pairs]


# --------------------------------------------------------------------- the items a tool lists
class Item(BaseModel):
    """An item of a probe's result, as a tool lists it."""

    model_config = ConfigDict(frozen=True)


class Located(Item):
    """An item about one neuron; its id is written from its indices where the producer gives none."""

    id: str = Field(description="neuron id, e.g. L3/N1024")
    layer: int
    neuron: int

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if isinstance(data, dict) and "id" not in data and "layer" in data and "neuron" in data:
            data = {**data, "id": neuron_id(int(data["layer"]), int(data["neuron"]))}
        return data


class FiringHit(Located):
    """A neuron active at the chosen token of a text (find_neurons)."""

    activation: Rounded = Field(description="activation at the token / the neuron's corpus max")
    raw_activation: Rounded


class CoactiveNeuron(Located):
    """A neuron that fires with a target (find_similar_neurons' co-activation, ``store.coactivation``)."""

    correlation: Rounded | None = Field(
        default=None, description="Pearson r of its activation with the target's over every token read "
        "(the target's top windows and as many random build-split windows); null where ranked from the scan alone")
    shared_tokens: int = Field(description="of the target's top windows (scan), how many are also among its own "
                               "top windows with its peak at the same token")
    shared_windows: int = Field(description="of the target's top windows, how many are also among its own, "
                                "its peak anywhere in the window")


class InductionScore(Located):
    """One neuron's behaviour on the repeated-sequence probe (``builder.probes.induction``)."""

    score: Rounded = Field(description="rise: mean activation on the second copy minus on the first, each "
                           "token's as a share of the neuron's corpus max clipped to [0, 1] (how much of its "
                           "firing range a repeat adds; no threshold)")
    first: Rounded = Field(description="share of first-copy tokens at which it fires (>= 0.5 of its corpus max)")
    second: Rounded = Field(description="share of second-copy tokens at which it fires")
    firing_difference: Rounded = Field(default=0.0, description="second - first")
    mean_first: Rounded = Field(default=0.0, description="mean activation on the first copy / its corpus max")
    mean_second: Rounded = Field(default=0.0, description="mean activation on the second copy / its corpus max")
    cohens_d: Rounded = Field(default=0.0, description="Cohen's d: mean activation on the second copy minus "
                              "on the first, over their pooled standard deviation (large where the response "
                              "stands out against the neuron's own spread, however small against its max)")

    @model_validator(mode="before")
    @classmethod
    def _difference(cls, data: Any) -> Any:
        """The firing difference, from the rates before they are rounded."""
        if isinstance(data, dict) and "firing_difference" not in data and "first" in data and "second" in data:
            data = {**data, "firing_difference": data["second"] - data["first"]}
        return data


class TokenChange(Item):
    """A token whose prediction changed most under an ablation."""

    position: int
    token: str = Field(description="the token whose prediction changed")
    loss_clean: Rounded
    loss_ablated: Rounded


class NeuronEffect(Located):
    """One neuron's own ablation effect, ablated alone."""

    delta: Rounded = Field(description="loss with this neuron alone ablated minus the clean loss")
    given: int = Field(default=0, description="its place in the neurons as passed (1 = first)")


class CopyLosses(Item):
    """On a given text that holds a span twice: the loss on each copy, as the probe measures it
    (each copy's first token left out: it cannot be predicted from the first copy)."""

    span: int = Field(description="tokens in the repeated span")
    first_at: int = Field(description="token index where its first copy starts")
    second_at: int = Field(description="token index where its second copy starts")
    loss_first_copy: Rounded = Field(description="the intact model's mean loss (nats) on the first copy")
    loss_second_copy: Rounded = Field(description="the same on the second: far lower where the model copies")
    loss_second_copy_ablated: Rounded = Field(description="on the second copy, with the neurons ablated")
    delta_second_copy: Rounded = Field(description="loss_second_copy_ablated - loss_second_copy")
    control_delta_second_copy: Rounded | None = Field(description="the controls' mean delta on the second copy")


class PredictionChange(Item):
    """A position whose next-token prediction steering changed most (on the clean text)."""

    position: int = Field(description="index in the prompt + clean continuation tokens")
    token: str = Field(description="the token there; the prediction is of the next one")
    clean_next: str = Field(description="the intact model's most likely next token")
    clean_prob: Rounded
    steered_next: str = Field(description="the steered model's most likely next token")
    steered_prob: Rounded = Field(description="probability of steered_next under steering")
    kl: Rounded = Field(description="KL divergence (nats) of the steered next-token distribution from the clean")


class MarkedWindow(Item):
    """A mistake of a claim: the token marked [[like this]] in its window."""

    set: str
    text: str = Field(description="the window with the token in [[ ]]")
    token: str
    activation: Rounded = Field(description="normalised activation at the marked token")


class SetScores(Item):
    """A claim scored on one set of windows."""

    set: str = Field(description="'top' (the neuron's top windows), 'random' (random corpus windows), "
                     "'matches' (corpus windows where the pattern matches)")
    windows: int
    tokens: int
    firing: int = Field(description="tokens that truly fire")
    claimed: int = Field(description="tokens the pattern claims")
    figures: Figures

    @classmethod
    def of(cls, name: str, windows: int, scores: Scores) -> SetScores:
        """The scores of a claim on ``windows`` windows of the set ``name``."""
        return cls(set=name, windows=windows, tokens=scores.tokens, firing=scores.firing,
                   claimed=scores.predicted, figures=scores)


# --------------------------------------------------------------------- whole results
@dataclass(frozen=True)
class InductionProbe:
    """The probe's ranking and whether the model copies at its settings."""

    scores: list[InductionScore]
    """Every probed neuron, best first."""
    loss_first: float
    """The model's mean next-token loss (nats) on the first copies."""
    loss_second: float
    """The same on the second copies: far below ``loss_first`` where the model copies."""
    seeds: list[int]
    tokens: int
    """Tokens per copy measured, over all seeds (each copy's first token excluded)."""


@dataclass(frozen=True)
class Coactivation:
    """The neurons most correlated with a target on the live model (``builder.probes.coactivation``)."""

    neurons: list[CoactiveNeuron]
    """Most correlated first; the target itself is never listed."""
    layers: list[int]
    """The layers searched."""
    top_windows: int
    """The target's top windows read (from the scan; those of held-out documents left out)."""
    random_windows: int
    """Random build-split windows read beside them."""
    tokens: int
    """Tokens every correlation is over."""
    heldout_left_out: int = 0
    """The target's top windows left out because they come from held-out documents."""
    scan_matches_corpus: bool = True
    """Whether the scan's windows are the embedded corpus's (where not, held-out top windows cannot
    be told apart, and none is left out)."""


@dataclass(frozen=True)
class Ablation:
    """What ablating the neurons did to the model's loss."""

    neurons: list[Neuron]
    loss_clean: float
    """Clean loss on the measured tokens (the second copies, on the probe)."""
    loss_ablated: float
    delta: float
    control_neurons: list[Neuron]
    """The first control draw's neurons (every draw is seeded: the same call draws the same)."""
    control_deltas: list[float]
    """Each control draw's delta: as many random neurons of the same layers (empty: no control)."""
    tokens_measured: int
    top_changes: list[TokenChange]
    loss_first_copy: float | None = None
    """On the probe, the clean loss on the first copies (None on a given text): beside
    ``loss_clean`` it says whether the model copies here at all."""
    each: list[NeuronEffect] = field(default_factory=list)
    """Each neuron's own delta, largest first (empty unless asked for)."""
    copies: CopyLosses | None = None
    """On a given text holding a span twice, the loss on each copy (None on the probe, whose
    measured tokens are the copies, and on a text without such a span)."""
    tokens_run: int = 0
    """Tokens the passes forwarded (every ablation, control and the intact run), BOS included."""
    seconds: float = 0.0
    """Time the passes took (what tokens per second are measured from)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        object.__setattr__(self, "control_neurons", _neurons(self.control_neurons))

    @property
    def control_delta(self) -> float | None:
        """The control draws' mean delta (None: no control)."""
        return sum(self.control_deltas) / len(self.control_deltas) if self.control_deltas else None

    @property
    def control_spread(self) -> float | None:
        """The control draws' standard deviation (n - 1; None for fewer than two draws)."""
        n = len(self.control_deltas)
        if n < 2:
            return None
        mean = sum(self.control_deltas) / n
        return (sum((d - mean) ** 2 for d in self.control_deltas) / (n - 1)) ** 0.5

    @property
    def rank(self) -> int | None:
        """The ablation's rank among the control draws by delta: 1 where it exceeds every draw's,
        ``draws + 1`` where no draw's is below it (ties count against it). None: no control."""
        if not self.control_deltas:
            return None
        return 1 + sum(d >= self.delta for d in self.control_deltas)


@dataclass(frozen=True)
class Steering:
    """Greedy continuations of a prompt, clean and with neurons clamped (``builder.probes.steer``)."""

    neurons: list[Neuron]
    values: list[float]
    """The raw activation each neuron was clamped to, in the order of ``neurons``."""
    prompt_tokens: int
    clean_text: str
    steered_text: str
    clean_tokens: list[str]
    steered_tokens: list[str]
    changes: list[PredictionChange]
    """Positions of the prompt and the clean continuation, most changed (KL) first."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))


@dataclass(frozen=True)
class HypothesisResult:
    """How well a pattern explains a neuron (test_hypothesis)."""

    layer: int
    neuron: int
    pattern: str
    kind: PatternKind
    max_activation: float
    sets: list[SetScores]
    overall: Scores
    corpus_windows_matched: int
    """Corpus windows in which the pattern claims at least one token."""
    false_positives: list[MarkedWindow]
    false_negatives: list[MarkedWindow]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "neuron", int(self.neuron))


def named(key: str, item: Located) -> dict[str, Any]:
    """An item's fields with its id written under a units key (``L7/F12`` for a latent): the
    probes name units by their indices, the query knows which units they are."""
    return {**dict(item), "id": keyed_id(key, item.layer, item.neuron)}
