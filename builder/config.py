"""Build configuration: one dataclass per stage, the paper's defaults named and explained once.

Where the paper (Foote et al. 2023) and its reference code differ, the field says which it
follows and why. The whole :class:`BuildConfig` is saved with every graph (``build`` field), so
a store says how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from store.trie import MatchRule

AugmentHelper = Literal["embedding", "model", "distilbert", "none"]


@dataclass(frozen=True)
class ScanConfig:
    """The activation scan: top-activating corpus windows of every neuron, in one pass."""

    window: int = 64
    """Tokens per corpus window. The paper used 1,024-token strings from Neuroscope, but pruning
    cuts nearly every example to a few tokens, so short windows lose little and give many more
    distinct examples per token forwarded on a CPU."""
    top_k: int = 20
    """Top-activating windows kept per neuron (the paper's 20 Neuroscope examples)."""
    batch_size: int = 32
    """Windows per forward pass."""
    max_tokens: int | None = None
    """Stop after this many corpus tokens (None: the whole corpus)."""
    random_windows: int = 20
    """Random corpus windows kept as negatives for fidelity (delphi's lesson: scoring on top
    examples alone flatters recall)."""
    sample_stride: int = 16
    """One token in this many, at random, feeds each neuron's activation histogram (density and
    quantiles); a full histogram of every token would cost as much as the forward pass."""
    checkpoint_seconds: float = 600.0
    """A long scan saves its state this often, so a crash resumes instead of starting over."""
    seed: int = 0


@dataclass(frozen=True)
class ExampleConfig:
    """Which tokens of the training windows become examples to prune, augment and fit."""

    pivots: Literal["argmax", "firing"] = "firing"
    """'argmax': one example per window, at its most activating token (the paper). 'firing':
    also every other token of the window that fires (normalised activation >= ``firing``), as
    the reference code builds a path for every firing token; more examples per neuron is the
    paper's first suggestion for better recall. The default because it measures better (README,
    "Ablations")."""
    firing: float = 0.5
    """Normalised activation at which a token counts as firing (the paper's threshold)."""


@dataclass(frozen=True)
class PruneConfig:
    """Pruning: the shortest prefix ending at the pivot that keeps the neuron firing."""

    enabled: bool = True
    """False keeps the whole window up to the pivot (an ablation)."""
    keep: float = 0.5
    """Keep the shortest prefix whose pivot activation is at least this share of the full
    window's (the paper's equation 2)."""
    step: int = 8
    """Prefix lengths tried per forward pass. The paper adds one token at a time; trying lengths
    1..8 together, then 9..16, finds the same shortest prefix in a fraction of the passes. The
    reference code's steps of 5 tokens capped at 30 can miss it, so we do not copy them."""


@dataclass(frozen=True)
class SaliencyConfig:
    """Saliency: how much the pivot's activation depends on each earlier token."""

    mask_token: str | None = None
    """Token that replaces a token to measure its importance. None: the tokenizer's unknown,
    padding or end token (the reference code hard-codes id 1, which is padding in GPT-NeoX but a
    quotation mark in GPT-2)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation: substitute important tokens and keep variants that still fire."""

    helper: AugmentHelper = "embedding"
    """Who proposes substitutes: 'embedding' (nearest neighbours in the model's own embedding
    matrix), 'model' (the model's own next-token predictions at the position), 'distilbert' (the
    paper's masked LM; needs internet), or 'none'."""
    important: float = 0.8
    """Tokens whose saliency reaches this are substituted (the reference code's value; the paper
    gives none)."""
    substitutes: int = 5
    """Substitutes proposed per important token (the reference code's value)."""
    keep: float = 0.5
    """Keep a variant whose pivot activation is at least this share of its original's (the
    paper's equation 4; the reference code keeps every variant)."""
    pivot: bool = True
    """Also substitute the activating token itself, finding other tokens the neuron fires on. The
    paper substitutes context tokens only (k < e_i); substituting the pivot too measures better
    (README, "Ablations"), which is why it is the default."""
    saliency: Literal["inherit", "recompute"] = "inherit"
    """Importances of a variant with a substituted context token: its original's ('inherit'; the
    variant differs in one token, which was important where it stands), or measured again
    ('recompute', as the paper's graph building reads). Recomputing costs a forward pass per token
    of every kept variant, about 90% of the build's tokens in middle layers. A variant with a
    substituted pivot is always measured again: its new token may fire for other reasons."""


@dataclass(frozen=True)
class FitConfig:
    """Graph building: one path per example, important context kept, the rest IGNORE."""

    important: float = 0.75
    """Context tokens with saliency at least this become path nodes; others become IGNORE (the
    reference code's value for graph building)."""
    rule: MatchRule = "all"
    """Prediction follows 'all' matching paths (the paper) or one 'greedy' walk (reference)."""
    normalized: bool = True
    """Match tokens case- and space-insensitively (reference) rather than exactly (paper). The
    default because it measures better (README, "Ablations")."""


@dataclass(frozen=True)
class EvalConfig:
    """Fidelity: the paper's split and baselines."""

    train: int = 10
    """Top examples used to build the graph; the rest of ``top_k`` are the test set (10/10)."""
    ngram: int = 5
    """n of the n-gram lookup baseline (the paper's 5): the token and the 4 before it."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything one build needs, saved beside the graphs it makes."""

    scan: ScanConfig = field(default_factory=ScanConfig)
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    neuron_batch: int = 64
    """Neurons built together: their rows share forward passes, and each batch is written to the
    store at once (a crash loses at most one batch)."""
    max_batch_tokens: int = 8192
    """Padded tokens per forward pass in the N2G stages (bounds memory)."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    @classmethod
    def paper(cls) -> BuildConfig:
        """The paper's method where our defaults differ: argmax pivots only, context-only
        augmentation, exact token matching."""
        return cls(examples=ExampleConfig(pivots="argmax"), augment=AugmentConfig(pivot=False),
                   fit=FitConfig(normalized=False))
