"""Saliency: how much the pivot's activation depends on each token of a snippet.

In: snippets (pivot last). Out: per snippet, one importance per token,
``alpha_k = 1 - a(pivot | token k masked) / a(pivot)`` (the paper's equation 3, with the ratio
the right way up), and the snippet's exact pivot activation. Token k is replaced by a mask token
(padding-like). One forward pass holds the original and every masked copy of many snippets.
Where the pivot does not fire (activation <= 0) importances are 0, not a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from builder.forward import pivot_activations
from builder.models import LoadedModel
from builder.prune import Snippet


def saliency(model: LoadedModel, layer: int, snippets: Sequence[Snippet], mask_id: int,
             max_batch_tokens: int = 8192,
             context: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Importance of every token of every snippet for its pivot activation.

    Args:
        context: measure only the pivot and the ``context`` tokens before it (None: all). Earlier
            tokens get importance 0, so the path ignores them. A snippet of L tokens costs about
            (L + 1) x (context + 2) forwarded tokens instead of (L + 1) ** 2.

    Returns:
        ``(importances, activations)``: one float32 array per snippet (as long as the snippet;
        the last entry is the pivot's own importance), and each snippet's pivot activation.
    """
    rows: list[tuple[int, ...]] = []
    neurons: list[int] = []
    first = [0 if context is None else max(0, len(s.tokens) - 1 - context) for s in snippets]
    for s, start in zip(snippets, first, strict=True):
        rows.append(s.tokens)
        rows.extend(s.tokens[:k] + (mask_id,) + s.tokens[k + 1:] for k in range(start, len(s.tokens)))
        neurons.extend([s.neuron] * (len(s.tokens) - start + 1))
    acts = pivot_activations(model, layer, rows, neurons, max_batch_tokens)
    importances, originals = [], np.zeros(len(snippets), dtype=np.float32)
    at = 0
    for i, (s, start) in enumerate(zip(snippets, first, strict=True)):
        measured = len(s.tokens) - start
        original, masked = acts[at], acts[at + 1: at + 1 + measured]
        at += measured + 1
        originals[i] = original
        importance = np.zeros(len(s.tokens), dtype=np.float32)
        if original > 0:
            importance[start:] = 1.0 - masked / original
        importances.append(importance)
    return importances, originals
