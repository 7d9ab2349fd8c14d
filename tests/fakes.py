"""A test double of the live model whose neurons follow a known rule, for testing without torch.

Tests pass :class:`FakeLiveBackend` (and the models it serves, :meth:`FakeLiveBackend.served`) to
``create_server``; a server subprocess gets it through ``python -m tests.fake_server``. Graphs it
builds are marked ``"fake": true`` in their ``build`` field.

The rule, for neuron ``n`` of layer ``l``: the neuron has an activating word ``A = word(n)`` and
a context word ``C = word(7n + l + 3)`` (a different word). On a token that is ``A``
(case- and space-insensitively) its raw activation is 4.0 when ``C`` stands among the three tokens
before, else 1.0; on every other token it is 0.0. The graph it "builds" holds the paths
``(A, C)`` and ``(A, IGNORE, C)`` at 1.0 and ``(A,)`` at 0.25, so it predicts the rule exactly
except when ``C`` stands three tokens back (a known miss, which makes agreement figures
non-trivial).

>>> fake = FakeLiveBackend()
>>> fake.tokens(fake.spec, "A cat sat.")
['A', ' cat', ' sat', '.']
>>> fake.rule(0, 1)
(' dog', ' apple')
>>> fake.activations(fake.spec, 0, 1, "an apple dog")[1]
[0.0, 0.0, 4.0]
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from n2g_mcp.registry import ServedModels
from store.coactivation import CorrelationSums, by_correlation
from store.effects import EditEffect, OutputEffects, TokenShift
from store.errors import BadArgument, Cancelled, Unavailable
from store.graph import (
    Example,
    Fidelity,
    Matching,
    MethodFidelity,
    NeuronGraph,
    graph_record,
)
from store.jsonl import StoreWriter
from store.logitfile import OutputTokens, TokenValue
from store.metrics import score
from store.models import ModelSpec
from store.probes import Coactivation
from store.progress import Progress
from store.scanfile import ScanFile
from store.tokens import normalize
from store.trie import IGNORE, NeuronTrie

WORDS = (" cat", " dog", " tree", " house", " river", " stone", " book", " light",
         " road", " cloud", " apple", " glass", " bird", " sand", " door", " wheel")
MAX_ACTIVATION = 4.0
VOCAB = ("<bos>", *WORDS)
"""The fake's token ids: its scan file's vocabulary (``tests/fake_files.py``)."""
_TOKEN = re.compile(r" ?[A-Za-z]+| ?\d+| ?[^\sA-Za-z\d]|\s+")


class FakeLiveBackend:
    """A :class:`n2g_mcp.live.LiveBackend` with a known rule; see the module docstring.

    Args:
        model: the one model it knows (the tests' store model).
        n_layers: layers of the fake model.
        d_mlp: neurons per layer.
        delay: seconds each of the build's four steps sleeps (to test progress and cancelling).
    """

    def __init__(self, model: str = "test-model", n_layers: int = 4, d_mlp: int = 64,
                 delay: float = 0.0) -> None:
        self.spec = ModelSpec(name=model, location=model, shape=(n_layers, d_mlp))
        """The one model it runs."""
        self.n_layers, self.d_mlp, self.delay = n_layers, d_mlp, delay
        self.calls: list[str] = []
        """What was asked, in order (``"tokens"``, ``"activations"``, ``"build"``)."""
        self.methods: list[str] = []
        """Each build's method, in order."""
        self.cancelled = threading.Event()
        """Set when a build saw its cancel event."""

    # ----------------------------------------------------------------- the rule
    @staticmethod
    def rule(layer: int, neuron: int) -> tuple[str, str]:
        """The (activating, context) words of a neuron."""
        act = WORDS[neuron % len(WORDS)]
        ctx_index = (7 * neuron + layer + 3) % len(WORDS)
        if WORDS[ctx_index] == act:
            ctx_index = (ctx_index + 1) % len(WORDS)
        return act, WORDS[ctx_index]

    def served(self, **options: object) -> ServedModels:
        """The models a server over this double serves: its one model, as the default."""
        return ServedModels(default=self.spec, embedded=False, **options)  # type: ignore[arg-type]

    def _check(self, spec: ModelSpec) -> None:
        if spec.name != self.spec.name:
            raise Unavailable(f"the fake backend runs only {self.spec.name!r}")

    # ----------------------------------------------------------------- LiveBackend
    def availability(self, spec: ModelSpec) -> str | None:
        return None if spec.name == self.spec.name else f"the fake backend cannot run {spec.name!r}"

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        self._check(spec)
        self.calls.append("tokens")
        return _TOKEN.findall(text)

    def raw(self, layer: int, neuron: int, tokens: Sequence[str]) -> list[float]:
        """Raw activations of a neuron on tokens, by the rule."""
        act, ctx = (normalize(t) for t in self.rule(layer, neuron))
        keys = [normalize(t) for t in tokens]
        return [0.0 if key != act else MAX_ACTIVATION if ctx in keys[max(0, i - 3):i] else 1.0
                for i, key in enumerate(keys)]

    def activations(self, spec: ModelSpec, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        self._check(spec)
        self.calls.append("activations")
        tokens = _TOKEN.findall(text)
        return tokens, self.raw(layer, neuron, tokens)

    def window_activations(self, spec: ModelSpec, layer: int, neuron: int,
                           rows: Sequence[Sequence[int]]) -> list[list[float]]:
        self._check(spec)
        self.calls.append("window_activations")
        return [self.raw(layer, neuron, [VOCAB[i] for i in row]) for row in rows]

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: object = None, method: str = "ordinary") -> list[NeuronGraph]:
        self._check(spec)
        model = spec.name
        self.calls.append("build")
        self.methods.append(method)
        for step, what in enumerate(("scan", "prune", "saliency", "fit")):
            if cancel is not None and cancel.is_set():
                self.cancelled.set()
                raise Cancelled("build cancelled; nothing was written")
            if progress is not None:
                progress(step, 4, f"{what} (fake)")
            time.sleep(self.delay)
        graphs = [self.graph(model, layer, n) for n in neurons]
        StoreWriter(store_path, model).append(graphs)
        if progress is not None:
            progress(4, 4, "done")
        return graphs

    def output_effects(self, spec: ModelSpec, layer: int, neuron: int, windows: Sequence[Sequence[int]],
                       raised: float, top: int) -> OutputEffects:
        """By the rule: the neuron writes its activating word and suppresses its context word, all
        through the direct path (raising it makes its word likelier; zeroing, less likely)."""
        self._check(spec)
        self.calls.append("output_effects")
        act, ctx = self.rule(layer, neuron)
        up = TokenShift(token=act, prob_clean=0.2, prob_edited=0.6, logprob_change=1.1, direct=1.0)
        down = TokenShift(token=act, prob_clean=0.2, prob_edited=0.05, logprob_change=-1.4, direct=1.0)

        def edit(kind: str, value: float, rose: list[TokenShift], fell: list[TokenShift]) -> EditEffect:
            return EditEffect(kind=kind, value=value, activation_change=value - MAX_ACTIVATION, kl=0.3, rose=rose,
                              fell=fell, direct_correlation=0.9, direct_overlap=1)  # type: ignore[arg-type]

        return OutputEffects(
            layer=layer, neuron=neuron, windows=len(windows), activation_clean=MAX_ACTIVATION,
            static=OutputTokens(promoted=[TokenValue(token=act, value=1.0)],
                                suppressed=[TokenValue(token=ctx, value=-1.0)], path="the fake's rule"),
            zeroed=edit("zeroed", 0.0, [], [down]), raised=edit("raised", raised, [up], []))

    def coactivation(self, spec: ModelSpec, layer: int, neuron: int, scan_file: ScanFile, layers: Sequence[int],
                     limit: int, *, progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> Coactivation:
        """By the rule, as the real one measures it: every neuron's correlation with the target over
        the target's top windows in the scan and as many of the scan's other windows (the first
        ones: the fake has no held-out split). Sleeps ``delay`` first, then honours ``cancel``."""
        self._check(spec)
        self.calls.append("coactivation")
        time.sleep(self.delay)
        if cancel is not None and cancel.is_set():
            self.cancelled.set()
            raise Cancelled("co-activation cancelled")
        top = [w for w in scan_file.top(layer, neuron) if w.activation > 0]
        if not top:
            raise BadArgument(f"L{layer}/N{neuron} has no top window to correlate over")
        chosen = {w.window for w in top}
        others = [i for i in range(len(scan_file.windows)) if i not in chosen][:len(top)]
        rows = [w.tokens for w in top] + [scan_file.window_tokens(i) for i in others]
        x = np.array([a for row in rows for a in self.raw(layer, neuron, row)])
        sums = CorrelationSums()
        per_layer = {}
        for each in layers:
            y = np.array([[a for row in rows for a in self.raw(each, n, row)] for n in range(self.d_mlp)]).T
            per_layer[each] = (y.sum(0), (y * y).sum(0), x @ y)
        sums.add(len(x), x.sum(), (x * x).sum(), per_layer)
        return Coactivation(neurons=by_correlation(sums, (layer, neuron), layers, limit, scan_file),
                            layers=list(layers), top_windows=len(top), random_windows=len(others), tokens=len(x))

    # ----------------------------------------------------------------- graphs
    def graph(self, model: str, layer: int, neuron: int) -> NeuronGraph:
        """The graph the fake 'builds' for a neuron, scored on its own examples."""
        act, ctx = self.rule(layer, neuron)
        trie = NeuronTrie()
        trie.insert((act, ctx), 1.0, [0.9])
        trie.insert((act, IGNORE, ctx), 1.0, [0.0, 0.8])
        trie.insert((act,), 0.25)
        windows = [[" the", ctx, act, " is", " here"], [" a", ctx, " big", act, "."],
                   [ctx, " and", " the", act, " again"], [" one", act, " alone", ".", " end"]]
        examples = []
        for i, tokens in enumerate(windows):
            pivot = tokens.index(act)
            examples.append(Example(tokens=tokens, pivot=pivot, activation=self.raw(layer, neuron, tokens)[pivot],
                                    split="train" if i % 2 == 0 else "test"))
        examples.sort(key=lambda e: -e.activation)
        pruned = [Example(tokens=e.tokens[: e.pivot + 1], pivot=e.pivot, activation=e.activation,
                          importances=[0.9 if t == ctx else 0.0 for t in e.tokens[: e.pivot + 1]])
                  for e in examples if e.split == "train"]
        true: list[float] = []
        predicted: list[float] = []
        for e in examples:
            if e.split == "test":
                true += [a / MAX_ACTIVATION for a in self.raw(layer, neuron, e.tokens)]
                predicted += trie.predict(e.tokens)
        scores = score(true, predicted)
        method = MethodFidelity(top=scores, random=scores)
        return graph_record(
            model=model, layer=layer, neuron=neuron, hook=f"blocks.{layer}.mlp.hook_post",
            max_activation=MAX_ACTIVATION, trie=trie, matching=Matching(),
            fidelity=Fidelity(n2g=method, token_lookup=method, ngram_lookup=method),
            examples=examples, pruned=pruned, build={"fake": True},
        )
