"""Neuron graph records for tests, made from paths.

In: paths as ``(tokens, activation)`` or ``(tokens, activation, importances)``; tokens run from the
activating token backwards, None (``store.trie.IGNORE``) for "any token". Out: a
:class:`store.graph.NeuronGraph` built as the builder builds one (a ``NeuronTrie``, then
``store.graph.graph_record``), optionally with the same F1 for every fidelity score.

>>> g = make_graph([((" except", None, " everyone"), 0.9)], layer=1, neuron=7)
>>> g.id, list(g.activating_tokens), list(g.context_tokens)
('L1/N7', [' except'], [' everyone'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from store.graph import Fidelity, Matching, MethodFidelity, NeuronGraph, graph_record
from store.metrics import Scores
from store.trie import NeuronTrie, Token

PathSpec = tuple[tuple[Token, ...], float] | tuple[tuple[Token, ...], float, Sequence[float]]


def scores(f1: float | None) -> Scores:
    """Scores whose precision, recall and F1 all equal ``f1`` (counts are placeholders)."""
    return Scores(precision=f1, recall=f1, f1=f1, correlation=None, firing=10, predicted=10, tokens=100)


def fidelity(f1: float | None) -> Fidelity:
    """A fidelity where N2G and both baselines score ``f1`` on top and random examples alike."""
    method = MethodFidelity(top=scores(f1), random=scores(f1))
    return Fidelity(n2g=method, token_lookup=method, ngram_lookup=method)


def make_graph(
    paths: Iterable[PathSpec],
    *,
    layer: int = 0,
    neuron: int = 0,
    model: str = "test-model",
    f1: float | None = None,
    importance: float = 1.0,
    matching: Matching | None = None,
) -> NeuronGraph:
    """A neuron graph record holding the given paths.

    Args:
        paths: ``(tokens, activation)`` pairs, or triples with one importance per context token.
        layer, neuron, model: the neuron's identity.
        f1: when given, a :func:`fidelity` with this F1 is attached; otherwise no fidelity.
        importance: the importance of every context token of a path given without importances.
        matching: the record's matching rule; the default matches exactly with all paths.
    """
    trie = NeuronTrie()
    for spec in paths:
        tokens, activation = spec[0], spec[1]
        weights = spec[2] if len(spec) == 3 else [importance] * (len(tokens) - 1)
        trie.insert(tokens, activation, weights)
    return graph_record(
        model=model,
        layer=layer,
        neuron=neuron,
        hook=f"blocks.{layer}.mlp.hook_post",
        max_activation=1.0,
        trie=trie,
        matching=matching or Matching(),
        fidelity=None if f1 is None else fidelity(f1),
    )
