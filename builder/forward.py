"""Batched forward passes: many (sequence, neuron) rows, one pass, stopping after the layer.

Every N2G stage asks the same question: "what is neuron n's activation along this token
sequence?", for many sequences and many neurons at once. :func:`neuron_activations` answers it for
a list of rows: each row is a token sequence and the neuron to read. Rows are sorted by length
and packed into passes of at most ``max_batch_tokens`` padded tokens; the pass stops after the
neuron's layer, so no later block runs.

Sequences are right-padded: in a causal model a padding token after a position cannot change
that position, so no attention mask is needed and absolute positions are unchanged. The model's
BOS token is put before every row; positions in and out exclude it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from builder.models import LoadedModel


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Row indices grouped so that (rows x longest row) stays under the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # rows are sorted, so the newest is the longest
        if current and (len(current) + 1) * longest > max_batch_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def _pack(model: LoadedModel, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(batch, 1 + longest)`` token ids: BOS, the row, then right padding."""
    offset = 0 if model.bos_id is None else 1
    longest = max(len(r) for r in rows)
    pad = model.bos_id if model.bos_id is not None else 0
    ids = torch.full((len(rows), offset + longest), pad, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, offset:offset + len(row)] = torch.as_tensor(row, dtype=torch.long)
    model.tokens_forwarded += ids.numel()
    return ids.to(model.device)


class _Done(Exception):
    """Raised by the deepest hook: nothing after it is needed."""


_FULL_DEPTH: ContextVar[bool] = ContextVar("full_depth", default=False)


@contextmanager
def full_depth() -> Iterator[None]:
    """Within it, every pass runs the whole model, unembedding included, as the reference N2G
    script's passes do; benchmarks use it to time a naive loop beside ours."""
    token = _FULL_DEPTH.set(True)
    try:
        yield
    finally:
        _FULL_DEPTH.reset(token)


def run_layers(model: LoadedModel, rows: Sequence[Sequence[int]],
               layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """All neurons of the given layers on a batch of rows: ``{layer: (batch, pos, d_mlp)}``.

    Positions exclude the BOS token. The pass ends inside the deepest requested layer: its hook
    raises once it has what it needs, so no later block, and never the unembedding, runs (the
    bridge's ``stop_at_layer`` still runs the unembedding for the last layer, which costs about
    eight blocks' work on SmolLM2: 576 x 49,152 multiply-adds a token).
    """
    offset = 0 if model.bos_id is None else 1
    deepest = max(layers)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def capture(acts: torch.Tensor, hook: object) -> torch.Tensor:
            captured[layer] = acts[:, offset:].float()  # (batch, pos, d_mlp)
            if layer == deepest and not _FULL_DEPTH.get():
                raise _Done
            return acts
        return capture

    ids = _pack(model, rows)
    with torch.inference_mode():
        try:
            model.bridge.run_with_hooks(
                ids, fwd_hooks=[(model.hook(layer), hook_for(layer)) for layer in layers],
                stop_at_layer=None if _FULL_DEPTH.get() else deepest + 1,
            )
        except _Done:
            pass
    return captured


def neuron_activations(model: LoadedModel, layer: int, rows: Sequence[Sequence[int]],
                       neurons: Sequence[int], max_batch_tokens: int = 8192) -> list[np.ndarray]:
    """For each row, its neuron's activation at every position of the row.

    Args:
        model: the loaded model.
        layer: the layer of every neuron asked for.
        rows: token id sequences (BOS is added here).
        neurons: one neuron index per row.
        max_batch_tokens: padded tokens per forward pass.

    Returns:
        One float32 array per row, as long as the row.
    """
    if len(rows) != len(neurons):
        raise ValueError(f"{len(rows)} rows but {len(neurons)} neurons")
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(rows)
    lengths = [len(r) for r in rows]
    for group in _batches(lengths, max_batch_tokens):
        group = [i for i in group if lengths[i] > 0]
        if not group:
            continue
        acts = run_layers(model, [rows[i] for i in group], [layer])[layer]  # (batch, pos, d_mlp)
        index = torch.as_tensor([neurons[i] for i in group], device=acts.device)
        picked = acts[torch.arange(len(group), device=acts.device), :, index]  # (batch, pos)
        picked = picked.cpu().numpy()
        for b, i in enumerate(group):
            out[i] = picked[b, :lengths[i]].copy()
    return out


def pivot_activations(model: LoadedModel, layer: int, rows: Sequence[Sequence[int]],
                      neurons: Sequence[int], max_batch_tokens: int = 8192) -> np.ndarray:
    """Each row's neuron activation at the row's last token: ``(rows,)``."""
    acts = neuron_activations(model, layer, rows, neurons, max_batch_tokens)
    return np.array([a[-1] if a.size else np.nan for a in acts], dtype=np.float32)


def next_token_logits(model: LoadedModel, rows: Sequence[Sequence[int]],
                      max_batch_tokens: int = 8192) -> list[torch.Tensor]:
    """For each row, the full model's logits predicting each of its tokens: ``(len, d_vocab)``.

    Entry k predicts token k from the tokens before it (the BOS token makes entry 0 defined).
    """
    if model.bos_id is None:
        raise ValueError("next-token predictions for token 0 need a BOS token")
    out: list[torch.Tensor] = [torch.zeros(0)] * len(rows)
    lengths = [len(r) for r in rows]
    for group in _batches(lengths, max_batch_tokens):
        ids = _pack(model, [rows[i] for i in group])
        with torch.inference_mode():
            logits = model.bridge(ids)  # (batch, 1 + pos, d_vocab)
        for b, i in enumerate(group):
            out[i] = logits[b, :lengths[i]].float().cpu()
    return out
