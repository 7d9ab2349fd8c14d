"""Graph building: snippets and their importances in, a :class:`store.trie.NeuronTrie` out.

Each snippet makes one path (paper, "Graph Building"): the pivot (activating) token, then,
walking backwards, every earlier token whose importance reaches ``important`` as itself and every
other token as IGNORE. The end of the path holds the snippet's normalised activation
(activation / the neuron's max activation).

One decision beyond the paper: IGNORE nodes beyond the farthest important token are dropped. They
would only demand that a text have that many earlier tokens, which makes a graph miss its own
pattern near the start of a text for reasons unrelated to the neuron.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from builder.config import FitConfig
from store.trie import IGNORE, NeuronTrie, Token


def snippet_path(tokens: Sequence[str], importances: Sequence[float],
                 important: float) -> tuple[tuple[Token, ...], tuple[float, ...]]:
    """The path of one snippet (pivot last) and the importances of its context nodes.

    >>> snippet_path(["a", " everyone", " else", " except"], [0.1, 0.9, 0.2, 1.0], 0.75)
    ((' except', None, ' everyone'), (0.2, 0.9))
    """
    path: list[Token] = [tokens[-1]]
    weights: list[float] = []
    for k in range(len(tokens) - 2, -1, -1):
        keep = importances[k] >= important
        path.append(tokens[k] if keep else IGNORE)
        weights.append(float(importances[k]))
    while len(path) > 1 and path[-1] is IGNORE:
        path.pop()
        weights.pop()
    return tuple(path), tuple(weights)


def fit(snippets: Sequence[Sequence[str]], importances: Sequence[np.ndarray],
        activations: Sequence[float], config: FitConfig) -> NeuronTrie:
    """Build one neuron's trie.

    Args:
        snippets: token strings of each snippet, pivot last.
        importances: saliency of each token of each snippet.
        activations: normalised pivot activation of each snippet.
        config: the importance threshold.
    """
    trie = NeuronTrie()
    for tokens, imp, act in zip(snippets, importances, activations, strict=True):
        path, weights = snippet_path(tokens, imp, config.important)
        trie.insert(path, float(act), weights)
    return trie
