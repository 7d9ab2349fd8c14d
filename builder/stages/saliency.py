"""Saliency: how much the pivot's activation depends on each token of a snippet.

In: snippets (pivot last). Out: per snippet, a :class:`Saliency`: one importance per token,
``alpha_k = 1 - a(pivot | token k masked) / a(pivot)`` (the paper's equation 3, with the ratio
the right way up), and the snippet's exact pivot activation (``Snippet.measured`` adds both to
the snippet). Token k is replaced by a mask token (padding-like; :func:`mask_token_id`). The
copy masking token k agrees with the snippet up to k, so the snippet (all but its pivot) runs
once into a KV cache and each copy runs only from k on, seeing the cache's first k tokens
(``builder.prefix.shared_prefix_activations``; the same activations as running every copy
whole); one prefill and a few suffix passes hold many snippets. Where the pivot does not fire
(activation <= 0) importances are 0, not a division by zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from builder.models import LoadedModel
from builder.prefix import shared_prefix_activations
from builder.stages.prune import Snippet
from store.errors import BadArgument


@dataclass(frozen=True)
class Saliency:
    """What masking each token of one snippet does to its pivot's activation."""

    importances: np.ndarray
    """``(len(tokens),)`` float32 importance of each token; the last is the pivot's own."""
    activation: float
    """The pivot's activation in the unmasked snippet."""


def mask_token_id(model: LoadedModel, token: str | None) -> int:
    """The id of the token that masks (``SaliencyConfig.mask_token``; None: the model's own)."""
    if token is None:
        return model.mask_id
    ids = model.tokenizer.convert_tokens_to_ids([token])
    unknown = ids and ids[0] == model.tokenizer.unk_token_id and token != model.tokenizer.unk_token
    if not ids or ids[0] is None or unknown:
        raise BadArgument(f"mask token {token!r} is not a single token of {model.name}")
    return int(ids[0])


def saliency(model: LoadedModel, layer: int, snippets: Sequence[Snippet], mask_id: int,
             max_batch_tokens: int = 8192, context: int | None = None) -> list[Saliency]:
    """Importance of every token of every snippet for its pivot activation.

    Args:
        context: measure only the pivot and the ``context`` tokens before it (None: all). Earlier
            tokens get importance 0, so the path ignores them. A snippet of L tokens costs
            L tokens of cached prefix and 1 + (context + 1) x (context + 2) / 2 real tokens of
            suffixes (46 at context 8, 57 once padded), instead of (L + 1) x (context + 2) with
            every copy run whole, or (L + 1) ** 2 with no cap.

    Returns:
        One :class:`Saliency` per snippet.
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
    out = []
    for s, start, measured in zip(snippets, first, acts, strict=True):
        original, masked = measured[0], measured[1:]  # (tokens - start,)
        importance = np.zeros(len(s.tokens), dtype=np.float32)
        if original > 0:
            importance[start:] = 1.0 - masked / original
        out.append(Saliency(importance, float(original)))
    return out
