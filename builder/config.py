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
Dtype = Literal["float32", "bfloat16"]
DTYPES: tuple[Dtype, ...] = ("float32", "bfloat16")


@dataclass(frozen=True)
class ScanConfig:
    """The activation scan: top-activating corpus windows of every neuron, in one pass."""

    window: int = 64
    """Tokens per corpus window. The paper used 1,024-token strings from Neuroscope, but pruning
    cuts nearly every example to a few tokens, so short windows lose little and give many more
    distinct examples per token forwarded on a CPU."""
    top_k: int = 50
    """Top-activating windows kept per neuron. Ranks 1-20 are the paper's 20 Neuroscope examples
    (split 10 train / 10 test); ranks 21-50 are extra training windows (``EvalConfig.extra_train``),
    the paper's first suggestion for better graphs."""
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
    part: Literal["all", "build"] = "all"
    """Which documents the scan reads (``builder.corpus``): 'all' (the shipped scans), or 'build',
    the held-out documents left out, so that no top window a graph trains on comes from them
    (what ordinary-text builds use)."""
    seed: int = 0


@dataclass(frozen=True)
class ExampleConfig:
    """Which tokens of the training windows become examples to prune, augment and fit."""

    pivots: Literal["argmax", "firing"] = "firing"
    """'argmax': one example per window, at its most activating token (the paper). 'firing':
    also every other token of the window that fires (normalised activation >= ``firing``), as
    the reference code builds a path for every firing token; more examples per neuron is the
    paper's first suggestion for better recall. The default because it measures better (docs/ablations.md)."""
    firing: float = 0.5
    """Normalised activation at which a token counts as firing (the paper's threshold)."""
    windows: int | None = 10
    """Train windows, in rank order, whose tokens become examples (None: every train window).
    Pruning, saliency and augmentation cost forward passes per example, so only the strongest
    train windows make paths; every train window still calibrates them (``FitConfig.calibrate``),
    which costs no forward pass."""
    max_pivots: int | None = 8
    """At most this many examples per neuron (None: no cap): each window's argmax first, in rank
    order, then its other firing tokens, strongest first. Examples whose pruned text is the same
    are measured once. Every model-facing stage costs forward passes per example; with the
    calibration (``FitConfig``) 8 examples score as 16 at a third less cost in layer 15 (docs/ablations.md)."""


@dataclass(frozen=True)
class PruneConfig:
    """Pruning: the shortest prefix ending at the pivot that keeps the neuron firing."""

    enabled: bool = True
    """False keeps the whole window up to the pivot (an ablation)."""
    keep: float = 0.5
    """Keep the shortest prefix whose pivot activation is at least this share of the full
    window's (the paper's equation 2)."""
    exact: int = 8
    """Every prefix length up to this is tried, all in the first forward pass (the paper adds one
    token at a time; trying 1..8 together finds the same shortest prefix in one pass). About two
    thirds of layer-15 examples resolve there."""
    growth: float | None = 1.25
    """Beyond ``exact``, each length tried is ``growth`` times the one before, rounded up (10,
    13, 17, 22, 28, ...; the whole window last), and the shortest of these that keeps the
    neuron firing is taken: at most 25% longer than the shortest of all lengths where activation
    grows with context. Tokens more than ``SaliencyConfig.context`` before the pivot count as
    unimportant anyway, so the extra ones only add context to the text saliency is measured on.
    Simulated on 256 layer-15 examples: 63 pruning tokens an example against 117 with every
    length (layer 29: 51 against 86), the prefix found 0.6 tokens longer on average; with the
    cached-prefix saliency, F1 no lower on 32 layer-15 neurons (docs/building.md, "Throughput"). None: every length (the paper's shortest prefix exactly). The reference code's
    steps of 5 tokens capped at 30 can miss a passing prefix, so we do not copy them."""
    per_pass: int = 2
    """Lengths beyond ``exact`` tried per forward pass. It sets the cost, never the answer (the
    shortest passing length of the same list): fewer passes, against tokens spent on lengths
    longer than an example needed."""


@dataclass(frozen=True)
class SaliencyConfig:
    """Saliency: how much the pivot's activation depends on each earlier token."""

    mask_token: str | None = None
    """Token that replaces a token to measure its importance. None: the tokenizer's unknown,
    padding or end token (the reference code hard-codes id 1, which is padding in GPT-NeoX but a
    quotation mark in GPT-2)."""
    context: int | None = 8
    """Measure only the pivot and this many tokens before it; earlier tokens of a snippet count
    as unimportant (None: every token, the paper). Saliency costs a pass per measured token, so a
    cap bounds the cost of the long snippets of deep layers; measured to lose nothing in layer 15
    (docs/ablations.md)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation: substitute important tokens and keep variants that still fire."""

    helper: AugmentHelper = "none"
    """Who proposes substitutes: 'embedding' (nearest neighbours in the model's own embedding
    matrix), 'model' (the model's own next-token predictions at the position), 'distilbert' (the
    paper's masked LM; needs internet), or 'none' (the default: with the calibrated fit, on 16
    layer-15 neurons, augmentation added 0.02 F1 for 1,529 of its 3,847 tokens a neuron, and the
    issue's budget is 2,500; docs/ablations.md). ``BuildConfig.paper()`` augments."""
    important: float = 0.8
    """Tokens whose saliency reaches this are substituted (the reference code's value; the paper
    gives none)."""
    substitutes: int = 5
    """Substitutes proposed per important token (the reference code's value)."""
    keep: float = 0.5
    """Keep a variant whose pivot activation is at least this share of its original's (the
    paper's equation 4; the reference code keeps every variant)."""
    pivot: bool = False
    """Also substitute the activating token itself, finding other tokens the neuron fires on. The
    paper substitutes context tokens only (k < e_i). It measured better before calibration; with
    calibration, token paths and the token probe name the other tokens a neuron fires on without
    forward passes, and each substituted pivot costs a new pruning and saliency pass (docs/ablations.md)."""
    new_pivot: Literal["remeasure", "inherit"] = "remeasure"
    """A variant with a substituted pivot is pruned and its saliency measured again
    ('remeasure': its new token may need other context), or keeps its original's text and
    importances ('inherit': no forward pass beyond the variant's own activation, but the context
    kept is the one the *original* pivot needed, which the oracle tests show to be wrong for a
    repeated-token neuron)."""
    distinct: bool = True
    """With folded matching (``FitConfig.normalized``), skip substitutes that fold to the token
    they replace or to an earlier substitute (' The' for 'the'): the fit cannot tell them apart,
    so they cost forward passes and add nothing. The embedding neighbours of a token are mostly
    such case and space variants."""
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
    normalized: bool = False
    """Match tokens case- and space-insensitively (reference) rather than exactly (paper). Exact
    since the calibrated fit: with token paths and the token probe naming each variant of a token
    that fires, folding only lets a path fire on variants that do not (64 layer-0 neurons: F1 0.97
    exact vs 0.95 folded; docs/ablations.md)."""
    scale: bool = True
    """END of a pruned example's path = the activation of its *full* example, not of the pruned
    text (which pruning lets fall to half): the reference code multiplies a pruned text's
    activations by (full max / pruned max) before fitting. Without it most deep paths end below
    the firing threshold and can never predict firing. The paper is silent."""
    calibrate: bool = True
    """Set each path's END from the train data: match it on every train window and on random
    train windows (``negatives``) and take the mean normalised activation of its matches; a path
    whose matches fire often enough (``firing_share``) ends at >= 0.5 (predicts firing), one whose
    matches rarely fire ends below 0.5. Paths that match no train text keep their measured END.
    Not in the paper, whose END is one example's activation whatever else the path matches."""
    backoff: bool = True
    """Also offer each path's shorter forms as candidates, down to the activating token alone
    (the path cut after each important context token); calibration keeps those that predict
    well, so a token that fires in any context gets a context-free path and one that needs
    context keeps it. Ignored without ``calibrate``: uncalibrated, a context-free path would
    predict firing on every occurrence of its token."""
    token_paths: bool = True
    """Also offer every token that fires in a train window as a context-free candidate path (no
    forward pass: the scan holds the activations), judged like the shorter forms. Calibrated, the
    graph then holds a token lookup's reach where the train text supports it, and the examples'
    context where the token alone does not fire. Ignored without ``calibrate``."""
    probe_layers: int = 2
    """In layers below this, probe every corpus token standing alone (``builder.probes.tokens``: one
    cheap pass for all neurons of a layer) and offer the tokens a neuron fires on as context-free
    candidates, so that a graph can name activating tokens its train windows never show. Early
    neurons respond mostly to the token itself; deeper ones depend on context, and the probe costs
    a deeper pass there. 0: never. Ignored without ``calibrate``."""
    firing_share: float = 0.2
    """A calibrated path predicts firing when at least this share of its train matches fire. Well
    below 0.5 on purpose: F1 on the firing tokens gains from a path whose precision exceeds about
    half the F1 reached, and most neurons' F1 is well below 1. Measured against 0.3 and 0.5
    (docs/ablations.md)."""
    negatives: int = 32
    """Random corpus windows (never the evaluation's random windows) whose activations are read
    once per batch of neurons and used as calibration negatives."""
    repeats: bool = True
    """Also offer repeat paths, ``(REPEAT,) * n`` ("the n tokens ending here occurred earlier in
    the text, in order": ``store.trie.REPEAT``), for each n up to ``repeat_reach`` at which the
    neuron fires on such tokens ``repeat_lift`` times as often as on the others. Calibrated like
    the shorter forms (longest first, on what longer repeat paths leave); a kept repeat path then
    replaces the paths whose firing train matches it covers. Not in the paper, whose tries hold
    literal tokens only and so cannot say "repeat" (issue 14). Ignored without ``calibrate``."""
    repeat_reach: int = 4
    """The longest repeat path offered (n tokens)."""
    repeat_probe: int = 16
    """Sequences of the repeated-sequence probe (``builder.probes.induction``: random plain words,
    then the same again, under its own seed) whose activations join the train text when repeat paths
    are proposed and judged, and only then (0: none). The corpus rarely shows in-context
    behaviour at the firing threshold: on L20/N438's 40 train and 32 random windows only 3-5% of
    the tokens that repeat earlier text fire, while on copied random words 63% do, so judged on
    the corpus alone no repeat path is kept. One pass of 16 x 96 tokens a batch of neurons."""
    repeat_lift: float = 2.0
    """How many times its firing rate on the other tokens the neuron's firing rate on tokens
    that continue an earlier n-token copy must reach (pooled over the train, random calibration
    and repeat-probe texts) for the n-token repeat path to be offered; that rate must also reach
    ``firing_share``."""


@dataclass(frozen=True)
class EvalConfig:
    """Fidelity: the paper's split and baselines."""

    top: int = 20
    """The paper's top examples (ranks 1..top), split at random into train and test."""
    train: int = 10
    """Of those, the examples used to build the graph; the other ``top - train`` are the test set
    (the paper's 10/10)."""
    extra_train: int = 30
    """Windows ranked below the paper's top (ranks top+1 .. top+extra_train, as far as the scan
    kept them) added to train; the test set is unchanged, whatever this is. 0: the paper's 10."""
    ngram: int = 5
    """n of the n-gram lookup baseline (the paper's 5): the token and the 4 before it."""
    short_before: int = 24
    short_after: int = 8
    """The short-text protocol (not in the paper): each test window cut to ``short_before``
    tokens before its pivot and ``short_after`` after, and the neuron measured again on the cut
    text, since an agent's texts are often short and lose the far context a window had. 0 and 0
    turn it off."""


@dataclass(frozen=True)
class OrdinaryConfig:
    """Graphs calibrated on ordinary text (issue 28; ``builder.stages.ordinary``): after the fit,
    each path's END becomes the neuron's mean over its matches in a uniform sample of build-split
    windows, context-free and (token, previous token) paths are added where they explain the
    neuron's variance there, and the graph predicts by its most specific path, the neuron's
    sample mean where none matches. The defaults are the variant ``proposed_p0_500_200`` of
    ``benchmarks/heldout_variants.py`` (docs/fidelity.md, held-out section). The served SmolLM2
    atlas is calibrated with it (``n2g build --ordinary --paths-from``) and ``build_graph`` builds
    with it unless asked for the fitted method; off by default for ``n2g build``, whose fitted
    graphs a later ``--ordinary --paths-from`` run calibrates (the atlas's two steps)."""

    enabled: bool = False
    """On (``n2g build --ordinary``, which also scans the build split only: ``ScanConfig.part``)."""
    windows: int = 2000
    """Build-split windows in the calibration sample (never held-out documents, never the
    evaluation's random windows); one forward pass serves every neuron of the layer."""
    token_paths: int = 500
    """Context-free paths added, those that explain the most variance over the sample first."""
    bigram_paths: int = 200
    """(token, previous token) paths added, by variance explained."""
    bigram_delta: float = 0.05
    """A pair's mean must differ from its token's by at least this to become a path."""
    heldout: bool = True
    """Also score each graph, and the token-lookup floor, on every token of the held-out
    documents and on the interval protocol drawn from them (``fidelity.heldout``)."""


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
    ordinary: OrdinaryConfig = field(default_factory=OrdinaryConfig)
    neuron_batch: int = 64
    """Neurons built together: their rows share forward passes, and each batch is written to the
    store at once (a crash loses at most one batch)."""
    max_batch_tokens: int = 8192
    """Padded tokens per forward pass in the N2G stages (bounds memory)."""
    dtype: Dtype = "float32"
    """Numeric type the model runs in, for the scan, every stage and a live comparison alike
    (``load_model(dtype=...)`` defaults to it; a build refuses a model loaded in another type, so
    each graph's record says how it was made). The paper and reference code run float32.
    'bfloat16' halves a layer-15 graph's stage work on this CPU (``avx512_bf16``; emulated, and
    slower, on CPUs without it) but, on 32 layer-15 neurons with its own scan, F1 fell from 0.252
    to 0.233 (0.281 to 0.267 with negatives) and 5% of firing tokens differ from float32's
    (docs/building.md, "Throughput"), so float32 stays the default."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    @classmethod
    def paper(cls) -> BuildConfig:
        """The paper's method where our defaults differ: the paper's 10 train windows, their
        argmax pivots only, context-only augmentation, exact token matching, END = the pruned
        example's activation, no calibration."""
        return cls(examples=ExampleConfig(pivots="argmax", windows=None, max_pivots=None),
                   saliency=SaliencyConfig(context=None),
                   augment=AugmentConfig(helper="embedding", pivot=False, new_pivot="remeasure"),
                   fit=FitConfig(normalized=False, scale=False, calibrate=False, backoff=False,
                                 token_paths=False, probe_layers=0),
                   eval=EvalConfig(extra_train=0))
