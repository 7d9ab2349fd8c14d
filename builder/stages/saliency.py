"""Saliency: how much the pivot's activation depends on each token of a snippet.

In: snippets (pivot last). Out: per snippet, one importance per token,
``alpha_k = 1 - a(pivot | token k masked) / a(pivot)`` (the paper's equation 3, with the ratio
the right way up), and the snippet's exact pivot activation. Token k is replaced by a mask token
(padding-like). The copy masking token k agrees with the snippet up to k, so the snippet (all
but its pivot) runs once into a KV cache and each copy runs only from k on, seeing the cache's
first k tokens (``builder.prefix.shared_prefix_activations``; the same activations as running
every copy whole); one prefill and a few suffix passes hold many snippets. Where the pivot
does not fire (activation <= 0) importances are 0, not a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from builder.prefix import shared_prefix_activations
from builder.models import LoadedModel
from builder.stages.prune import Snippet


def saliency(model: LoadedModel, layer: int, snippets: Sequence[Snippet], mask_id: int,
             max_batch_tokens: int = 8192,
             context: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Importance of every token of every snippet for its pivot activation.

    Args:
        context: measure only the pivot and the ``context`` tokens before it (None: all). Earlier
            tokens get importance 0, so the path ignores them. A snippet of L tokens costs
            L tokens of cached prefix and 1 + (context + 1) x (context + 2) / 2 real tokens of
            suffixes (46 at context 8, 57 once padded), instead of (L + 1) x (context + 2) with
            every copy run whole, or (L + 1) ** 2 with no cap.

    Returns:
        ``(importances, activations)``: one float32 array per snippet (as long as the snippet;
        the last entry is the pivot's own importance), and each snippet's pivot activation.
    """
    first = [0 if context is None else max(0, len(s.tokens) - 1 - context) for s in snippets]
    # Per snippet, one cached prefix: every token but the pivot. The original reads the pivot
    # after all of it; the copy masking token k follows its first k tokens with the mask token
    # and the rest of the snippet, so only the tokens from k on run again.
    prefixes = [s.tokens[:-1] for s in snippets]
    suffixes = [[s.tokens[-1:]] + [(mask_id,) + s.tokens[k + 1:] for k in range(start, len(s.tokens))]
                for s, start in zip(snippets, first, strict=True)]
    starts = [[len(s.tokens) - 1] + list(range(start, len(s.tokens)))
              for s, start in zip(snippets, first, strict=True)]
    acts = shared_prefix_activations(model, layer, prefixes, suffixes, [s.neuron for s in snippets],
                                     max_batch_tokens, starts)
    importances, originals = [], np.zeros(len(snippets), dtype=np.float32)
    for i, (s, start, measured) in enumerate(zip(snippets, first, acts, strict=True)):
        original, masked = measured[0], measured[1:]  # (tokens - start,)
        originals[i] = original
        importance = np.zeros(len(s.tokens), dtype=np.float32)
        if original > 0:
            importance[start:] = 1.0 - masked / original
        importances.append(importance)
    return importances, originals
