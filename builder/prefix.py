"""Shared-prefix passes: many token sequences that continue one cached prefix, read at their end.

In: per group, a prefix and suffixes that follow (part of) it, and the neuron to read. Out: the
neuron's activation at each suffix's last token, the same as running every prefix + suffix whole
(:func:`builder.forward.pivot_activations`). The saliency stage's masked copies of a snippet each
follow the snippet's tokens before the masked one, so one cached snippet serves them all: each
group's prefix runs once into a KV cache, to the layer, and its suffixes run after it. Models
without a cache or a BOS token run every row whole.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from builder.forward import forward_to, pack, pivot_activations
from builder.models import LoadedModel

log = logging.getLogger(__name__)


def _prefix_batches(prefixes: Sequence[Sequence[int]], suffixes: Sequence[Sequence[Sequence[int]]],
                    max_batch_tokens: int) -> list[list[int]]:
    """Groups in batches, by prefix length, with (rows x (longest prefix + longest suffix)) under
    the budget: the cache and attention of a batch then take what a plain pass of the same
    padded rows would, while the blocks compute only the prefixes once and the suffixes."""
    order = sorted(range(len(prefixes)), key=lambda g: len(prefixes[g]))
    batches: list[list[int]] = []
    current: list[int] = []
    rows = suffix = 0
    for g in order:
        longest = max(len(x) for x in suffixes[g])
        width = 1 + len(prefixes[g]) + max(suffix, longest)  # sorted: this prefix is the longest
        if current and (rows + len(suffixes[g])) * width > max_batch_tokens:
            batches.append(current)
            current, rows, suffix = [], 0, 0
        current.append(g)
        rows, suffix = rows + len(suffixes[g]), max(suffix, longest)
    if current:
        batches.append(current)
    return batches


SUFFIX_PASSES = 3
"""Passes that share one batch's suffixes, shortest with shortest: saliency's suffixes run from
1 to ``context + 1`` tokens, and one pass would pad them all to the longest (90 tokens a
snippet at ``context=8`` for 46 real ones); three passes pad them to 57."""


def _length_buckets(lengths: Sequence[int], passes: int) -> list[list[int]]:
    """Indices of ``lengths`` in at most ``passes`` groups of neighbouring lengths, with the
    fewest padded tokens (each group padded to its longest).

    >>> _length_buckets([1, 1, 2, 3, 4, 5, 6, 7, 8, 9], 3)
    [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    >>> _length_buckets([5, 2, 5], 3)
    [[1], [0, 2]]
    """
    values = sorted(set(lengths))
    count = [sum(1 for n in lengths if n == v) for v in values]
    m = len(values)
    # best[p][j]: fewest padded tokens for the first j lengths in p groups; cut: where the last starts.
    inf = float("inf")
    best = [[inf] * (m + 1) for _ in range(passes + 1)]
    cut = [[0] * (m + 1) for _ in range(passes + 1)]
    best[0][0] = 0
    for p in range(1, passes + 1):
        for j in range(1, m + 1):
            for i in range(j):
                cost = best[p - 1][i] + values[j - 1] * sum(count[i:j])
                if cost < best[p][j]:
                    best[p][j], cut[p][j] = cost, i
    p = min(range(1, passes + 1), key=lambda q: (best[q][m], q))
    bounds, j = [], m
    while j > 0:
        bounds.append((values[cut[p][j]], values[j - 1]))
        j, p = cut[p][j], p - 1
    return [[i for i, n in enumerate(lengths) if lo <= n <= hi] for lo, hi in reversed(bounds)]


def _prefill(model: LoadedModel, ids: torch.Tensor, layer: int,
             make_cache: Callable[[], Any]) -> dict[str, Any]:
    """Run ``ids`` to ``layer`` into a fresh KV cache; returns the keyword arguments that pass the
    cache (the same ones must carry it through the suffix pass).

    Hugging Face (5.x) hands its decoder layers the cache as ``cache=``, a name the bridge's
    attention (TransformerLens 4.3) does not read; under ``layer_past`` it does. The
    ``past_key_values`` name makes HF offset the mask and positions by the cache's length. Some
    families (GPT-NeoX) pass ``layer_past`` themselves: there the extra name is refused, and the
    HF name alone reaches the bridge.
    """
    cache = make_cache()
    kv = {"past_key_values": cache, "layer_past": cache}
    try:
        forward_to(model, ids, [layer], **kv)
    except TypeError as exc:
        if "layer_past" not in str(exc):
            raise
        kv = {"past_key_values": make_cache()}
        forward_to(model, ids, [layer], **kv)
    return kv


def _suffix_pass(model: LoadedModel, layer: int, rows: Sequence[Sequence[int]], seen: Sequence[int],
                 neurons: Sequence[int], width: int, kv: dict[str, Any]) -> np.ndarray:
    """One pass of suffixes after a cache of ``width`` positions (one cache row per suffix):
    each row sees the cache's first ``seen`` positions, never the rest (another suffix's share
    of the prefix, or padding), then itself; returns each row's neuron at its last token."""
    suffix_ids = pack(model, rows, bos=False)  # (rows, longest suffix)
    device = suffix_ids.device
    visible = torch.as_tensor(list(seen), device=device)
    mask = torch.cat([(torch.arange(width, device=device)[None, :] < visible[:, None]).long(),
                      torch.ones_like(suffix_ids)], dim=1)  # (rows, width + suffix)
    positions = visible[:, None] + torch.arange(suffix_ids.shape[1], device=device)[None, :]
    acts = forward_to(model, suffix_ids, [layer], attention_mask=mask, position_ids=positions,
                       **kv)[layer]  # (rows, suffix, d_mlp)
    last = torch.as_tensor([len(x) - 1 for x in rows], device=device)
    index = torch.as_tensor(list(neurons), device=device)
    return acts[torch.arange(len(rows), device=device), last, index].cpu().numpy()


def shared_prefix_activations(model: LoadedModel, layer: int, prefixes: Sequence[Sequence[int]],
                              suffixes: Sequence[Sequence[Sequence[int]]], neurons: Sequence[int],
                              max_batch_tokens: int = 8192,
                              starts: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
    """Activation at the last token of ``prefixes[g][:at] + s`` for every suffix ``s`` of group
    ``g``, where ``at`` is the suffix's entry in ``starts`` (None: the whole prefix, for every
    suffix).

    The answer is :func:`pivot_activations` on the concatenated rows. Where the model takes a KV
    cache (``model.prefix_cache``) and has a BOS token, each group's prefix runs once, to the
    layer, and its suffixes run after it from the cached keys and values: a batch of groups is
    one pass over their right-padded prefixes, then one over every suffix, with an attention
    mask that shows each suffix its own first ``at`` prefix tokens (never the rest, nor the
    padding) and positions that continue them. The saliency stage's masked copies of a snippet
    each follow the snippet's tokens before the masked one: one cached snippet serves them all.

    Args:
        model: the loaded model.
        layer: the layer of every neuron asked for.
        prefixes: one token sequence per group (may be empty: BOS alone is then shared).
        suffixes: per group, non-empty token sequences that follow (part of) its prefix.
        neurons: one neuron per group.
        max_batch_tokens: padded tokens per pass, counted as a plain pass would pad the rows.
        starts: per group, per suffix, how many of the prefix's tokens come before it
            (0 <= at <= len(prefix)).

    Returns:
        Per group, a float32 array with one activation per suffix.
    """
    if not len(prefixes) == len(suffixes) == len(neurons):
        raise ValueError(f"{len(prefixes)} prefixes, {len(suffixes)} suffix groups, {len(neurons)} neurons")
    if any(not x for group in suffixes for x in group):
        raise ValueError("every suffix needs a token: the activation is read at its last one")
    if starts is None:
        starts = [[len(p)] * len(group) for p, group in zip(prefixes, suffixes, strict=True)]
    if [len(s) for s in starts] != [len(group) for group in suffixes] or any(
            not 0 <= at <= len(p) for p, s in zip(prefixes, starts, strict=True) for at in s):
        raise ValueError("starts needs one entry per suffix, each between 0 and its prefix's length")
    if not model.prefix_cache or model.bos_id is None:
        rows = [tuple(p[:at]) + tuple(x) for p, group, s in zip(prefixes, suffixes, starts, strict=True)
                for x, at in zip(group, s, strict=True)]
        owners = [n for n, group in zip(neurons, suffixes, strict=True) for _ in group]
        flat = iter(pivot_activations(model, layer, rows, owners, max_batch_tokens))
        return [np.array([next(flat) for _ in group], dtype=np.float32) for group in suffixes]
    from transformers import DynamicCache

    out = [np.zeros(len(group), dtype=np.float32) for group in suffixes]
    for batch in _prefix_batches(prefixes, suffixes, max_batch_tokens):
        ids = pack(model, [prefixes[g] for g in batch])  # (groups, 1 + longest prefix)
        kv = _prefill(model, ids, layer, DynamicCache)
        cache = kv["past_key_values"]
        if cache.get_seq_length() != ids.shape[1]:
            log.warning("%s: the bridge did not fill the KV cache; saliency runs every masked "
                        "copy whole (same result, slower)", model.name)
            model.prefix_cache = False
            return shared_prefix_activations(model, layer, prefixes, suffixes, neurons,
                                             max_batch_tokens, starts)
        owner = [b for b, g in enumerate(batch) for _ in suffixes[g]]  # each suffix's group
        rows = [x for g in batch for x in suffixes[g]]
        seen = [1 + at for g in batch for at in starts[g]]  # BOS too
        picked = np.zeros(len(rows), dtype=np.float32)
        parts = _length_buckets([len(x) for x in rows], SUFFIX_PASSES)
        for n, part in enumerate(parts):
            # A suffix pass appends to the cache it is given: every pass but the last takes a copy.
            part_kv = kv if n == len(parts) - 1 else copy.deepcopy(kv)
            part_kv["past_key_values"].batch_select_indices(
                torch.as_tensor([owner[r] for r in part], device=ids.device))  # (rows, ...)
            picked[part] = _suffix_pass(model, layer, [rows[r] for r in part],
                                        [seen[r] for r in part],
                                        [neurons[batch[owner[r]]] for r in part], ids.shape[1], part_kv)
        first = 0
        for g in batch:
            out[g] = picked[first:first + len(suffixes[g])].astype(np.float32)
            first += len(suffixes[g])
    return out
