"""What the whole-model probes return: typed, torch-free results.

The probes themselves run the model (``builder.probes.firing``, ``builder.probes.induction``,
``builder.probes.ablate``, ``builder.probes.hypothesis``); their results are defined here, outside the
builder, so that the server's interface to the live model (``n2g_mcp.live.LiveBackend``), the
builder that implements it and the test doubles share one typed contract and the server never
imports torch to read them.

Layer and neuron indices are plain ``int`` whatever the producer passed (numpy indices from an
``argsort`` included): they are used as SQL parameters and JSON values, where a numpy integer
silently matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from store.metrics import Scores

PatternKind = Literal["regex", "tokens"]
"""How test_hypothesis reads a pattern: a regular expression over the text, or ``|``-separated tokens."""
AblationMode = Literal["zero", "mean"]
"""How a neuron is ablated: set to 0, or to its mean over random corpus windows."""
Neuron = tuple[int, int]
"""``(layer, neuron)``."""
PROBE_SEQUENCES, PROBE_LENGTH, PROBE_SEEDS = 16, 40, (0, 1, 2)
"""The induction probe's default size (``builder.probes.induction``): 16 random sequences of 40 tokens,
each then repeated, for each of 3 seeds. ablate_neurons' default test is the first seed's."""


def _neurons(pairs: list[tuple[int, int]]) -> list[Neuron]:
    return [(int(layer), int(neuron)) for layer, neuron in pairs]


@dataclass(frozen=True)
class _Located:
    """A result about one neuron; its indices are coerced to ``int``."""

    layer: int
    neuron: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", int(self.layer))
        object.__setattr__(self, "neuron", int(self.neuron))


@dataclass(frozen=True)
class FiringHit(_Located):
    """A neuron active at the chosen token of a text (find_neurons)."""

    activation: float
    """Raw activation at the token."""
    normalized: float
    """Activation / the neuron's largest corpus activation."""


@dataclass(frozen=True)
class InductionScore(_Located):
    """One neuron's behaviour on the repeated-sequence probe (``builder.probes.induction``)."""

    score: float
    """Rise: mean activation on the second copy minus on the first, each token's in units of the
    neuron's corpus max, clipped to [0, 1] (``builder.probes.induction``)."""
    first: float
    """Share of first-copy tokens at which the neuron fires (>= 0.5 of its corpus max)."""
    second: float
    """Share of second-copy tokens at which the neuron fires."""
    mean_first: float = 0.0
    """Mean activation on the first copy / the neuron's corpus max."""
    mean_second: float = 0.0
    """Mean activation on the second copy / the neuron's corpus max."""
    cohens_d: float = 0.0
    """(mean activation on the second copy - on the first) / their pooled standard deviation."""

    @property
    def firing_difference(self) -> float:
        """Firing rate on the second copy minus the rate on the first (the probe's score before
        issue 14)."""
        return self.second - self.first


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
class TokenChange:
    """A token whose prediction changed most under an ablation."""

    position: int
    token: str
    loss_clean: float
    loss_ablated: float


@dataclass(frozen=True)
class NeuronEffect(_Located):
    """One neuron's own ablation effect, ablated alone."""

    delta: float
    """Loss with this neuron alone ablated minus the clean loss (nats)."""


@dataclass(frozen=True)
class Ablation:
    """What ablating the neurons did to the model's loss."""

    neurons: list[Neuron]
    loss_clean: float
    """Clean loss on the measured tokens (the second copies, on the probe)."""
    loss_ablated: float
    delta: float
    control_neurons: list[Neuron]
    control_delta: float | None
    """The same for as many random neurons of the same layers (None: no control asked)."""
    tokens_measured: int
    top_changes: list[TokenChange]
    loss_first_copy: float | None = None
    """On the probe, the clean loss on the first copies (None on a given text): beside
    ``loss_clean`` it says whether the model copies here at all."""
    each: list[NeuronEffect] = field(default_factory=list)
    """Each neuron's own delta, largest first (empty unless asked for)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        object.__setattr__(self, "control_neurons", _neurons(self.control_neurons))


@dataclass(frozen=True)
class PredictionChange:
    """A position whose next-token prediction steering changed most (on the clean text)."""

    position: int
    token: str
    """The token at the position (the prediction is of the token after it)."""
    clean_next: str
    clean_prob: float
    steered_next: str
    steered_prob: float
    """Probability of ``steered_next`` under steering."""
    kl: float
    """KL divergence (nats) of the steered next-token distribution from the clean one."""


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
class MarkedWindow:
    """A mistake of a claim: the token marked ``[[like this]]`` in its context."""

    set: str
    text: str
    token: str
    activation: float
    """Normalised activation at the marked token."""
    claimed: bool


@dataclass(frozen=True)
class SetScores:
    """A claim scored on one set of windows."""

    set: str
    windows: int
    scores: Scores


@dataclass(frozen=True)
class HypothesisResult(_Located):
    """How well a pattern explains a neuron (test_hypothesis)."""

    pattern: str
    kind: PatternKind
    max_activation: float
    sets: list[SetScores]
    overall: Scores
    corpus_windows_matched: int
    """Corpus windows in which the pattern claims at least one token."""
    false_positives: list[MarkedWindow]
    false_negatives: list[MarkedWindow]
