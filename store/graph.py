"""The stored record of one neuron: its graph, its examples and its fidelity.

One :class:`NeuronGraph` is one line of a store (see ``store/jsonl.py`` and
``docs/store-format.md``). The trie is kept as flat rows (``store.trie.NeuronTrie.to_rows``) so
that long paths never nest JSON deeply. Its examples are text (format 1) or references into the model's scan
file (format 2, ``store/examples.py``); :attr:`NeuronGraph.scan` names the scan file that its
store's header points them into.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PrivateAttr

from store.examples import Example, ExampleRef, PrunedRef, ScanRef
from store.metrics import Scores
from store.names import unit_id, units_key
from store.trie import MatchRule, NeuronTrie, Path


class MethodFidelity(BaseModel):
    """One predictor's scores on the neuron's held-out examples."""

    top: Scores = Field(description="test top-activating examples only (the paper's Table 1)")
    random: Scores = Field(description="test examples plus random corpus windows as negatives")
    short: Scores | None = Field(
        default=None, description="test examples cut to a short text around the pivot (24 tokens before, "
        "8 after) and measured again on it; None in graphs built before this protocol")


class HeldoutScores(BaseModel):
    """One predictor on the held-out documents (text no build reads)."""

    tokens: Scores = Field(description="every token of the held-out documents")
    interval: Scores = Field(description="the interval protocol drawn from them (6 top windows, 2 from each of "
                             "12 activation intervals, 10 random; OpenAI's and Anthropic's scoring set)")


class HeldoutFidelity(BaseModel):
    """The graph and the floor it must beat, on ordinary text."""

    n2g: HeldoutScores
    floor: HeldoutScores = Field(description="token lookup: each token's mean activation over build-split text")


class Fidelity(BaseModel):
    """N2G and the paper's two baselines, on the same train/test split; and on held-out documents."""

    n2g: MethodFidelity
    token_lookup: MethodFidelity
    ngram_lookup: MethodFidelity
    heldout: HeldoutFidelity | None = Field(
        default=None, description="on ordinary text, held-out documents; None in graphs built before it")


class Matching(BaseModel):
    """How the graph matches text when it predicts."""

    rule: MatchRule = Field(default="all", description="'all' paths (paper), one 'greedy' walk (reference code), "
                            "or the most 'specific' matching path (graphs calibrated on ordinary text)")
    normalized: bool = Field(default=False, description="match tokens case- and space-insensitively")
    default: FiniteFloat = Field(default=0.0, description="the prediction where no path matches: 0, or for "
                                 "graphs calibrated on ordinary text the neuron's mean activation there")


class NeuronGraph(BaseModel):
    """One neuron's graph, as stored: a line of a store."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="model name, e.g. smollm2-135m")
    layer: int = Field(ge=0)
    neuron: int = Field(ge=0)
    hook: str = Field(description="hook point whose activations were read")
    units: str = Field(default="neurons", description="'neurons', or the dictionary whose latent "
                       "this is (then `neuron` is the latent's index)")
    max_activation: FiniteFloat = Field(description="largest activation seen in the corpus (the normaliser)")
    activating_tokens: dict[str, FiniteFloat] = Field(
        default_factory=dict, description="activating token -> largest normalised activation"
    )
    context_tokens: dict[str, FiniteFloat] = Field(
        default_factory=dict, description="context token -> largest importance (the paper's saliency, "
        "1 - activation with the token masked / activation; above 1 where masking drives it below zero)"
    )
    trie: list[list[Any]] = Field(description="the trie as [parent, token, importance, end] rows")
    matching: Matching = Field(default_factory=Matching)
    fidelity: Fidelity | None = None
    unexplained: bool = Field(
        default=False,
        description="the graph predicts no firing on its own train windows: the builder found no "
                    "path that the neuron's firing supports, so its zero predictions are a failure "
                    "to explain the neuron, not a finding that it is silent",
    )
    examples: list[Example | ExampleRef] = Field(
        default_factory=list, description="top corpus examples, as text or scan references")
    pruned: list[Example | PrunedRef] = Field(
        default_factory=list, description="pruned training examples, as text or scan spans")
    build: dict[str, Any] = Field(default_factory=dict, description="build parameters and timings")
    _scan: ScanRef | None = PrivateAttr(default=None)

    @property
    def scan(self) -> ScanRef | None:
        """The scan file the references among its examples point into: its store header's, set
        by the reader (never part of a line, so one header serves every line)."""
        return self._scan

    def with_scan(self, scan: ScanRef | None) -> NeuronGraph:
        """This graph, told which scan its references point into (the reader calls it)."""
        self._scan = scan
        return self

    @property
    def id(self) -> str:
        """The unit's readable id, e.g. ``L3/N1024`` (a latent: ``L7/F12``)."""
        return unit_id(self.layer, self.neuron, self.units)

    @property
    def key(self) -> str:
        """The units key its store files it under (``store.names.units_key``)."""
        return units_key(self.model, self.units)

    @cached_property
    def graph(self) -> NeuronTrie:
        """The trie, keyed as ``matching`` says (validated on first use)."""
        trie = NeuronTrie.from_rows(self.trie)
        return trie.normalized_copy() if self.matching.normalized else trie

    def predict(self, tokens: list[str]) -> list[float]:
        """Predicted normalised activation per token, with the graph's own matching rule."""
        return self.graph.predict(tokens, rule=self.matching.rule, default=self.matching.default)

    def explain(self, tokens: list[str]) -> list[tuple[float, Path | None]]:
        """Per token, the prediction and the path that gave it (``NeuronTrie.explain``), with the
        graph's own matching rule."""
        return self.graph.explain(tokens, rule=self.matching.rule, default=self.matching.default)


def graph_record(
    *,
    model: str,
    layer: int,
    neuron: int,
    hook: str,
    max_activation: float,
    trie: NeuronTrie,
    matching: Matching,
    **fields: Any,
) -> NeuronGraph:
    """Make a record from a built trie, deriving its token sets from the trie itself."""
    return NeuronGraph(
        model=model,
        layer=layer,
        neuron=neuron,
        hook=hook,
        max_activation=max_activation,
        activating_tokens={t: round(v, 4) for t, v in trie.activating_tokens().items()},
        context_tokens={t: round(v, 4) for t, v in trie.context_tokens().items()},
        trie=trie.to_rows(),
        matching=matching,
        **fields,
    )


def top_f1(graph: NeuronGraph) -> float | None:
    """The graph's N2G F1 on its held-out top examples (the paper's Table 1 figure), or None."""
    value = graph.fidelity.n2g.top.f1 if graph.fidelity is not None else None
    # NaN cannot be ordered; it says as little as a missing score.
    return None if value is None or math.isnan(value) else value
