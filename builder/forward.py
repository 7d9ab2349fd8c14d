"""Batched forward passes: many (sequence, neuron) rows, one pass, stopping after the layer.

Every N2G stage asks the same question: "what is neuron n's activation along this token
sequence?", for many sequences and many neurons at once. :func:`neuron_activations` answers it for
a list of rows: each row is a token sequence and the neuron to read. Rows are sorted by length
and packed into passes of at most ``max_batch_tokens`` padded tokens; the pass stops after the
neuron's layer, so no later block runs.

Sequences are right-padded: in a causal model a padding token after a position cannot change
that position, so no attention mask is needed and absolute positions are unchanged. The model's
BOS token is put before every row; positions in and out exclude it.

:func:`long_activations` reads neurons along one text of any length in windows with overlap, so
memory stays bounded (the live model's ``activations`` uses it). :func:`next_token_logits`,
:func:`token_losses` (with neurons edited: ablation; :func:`edited_losses` runs several edits in
shared passes) and :func:`layers_and_losses` run the whole model, for the augmentation helper and
the probes. Passes that continue a cached prefix (the
saliency stage's) are in ``builder.prefix``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from builder.models import LoadedModel
from store.errors import Cancelled
from store.models import hook_name

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


def pack(model: LoadedModel, rows: Sequence[Sequence[int]], bos: bool = True) -> torch.Tensor:
    """``(batch, 1 + longest)`` token ids: BOS, the row, then right padding (``bos=False``: rows
    that continue a cached prefix, ``(batch, longest)``)."""
    offset = 0 if model.bos_id is None or not bos else 1
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


def forward_to(model: LoadedModel, ids: torch.Tensor, layers: Sequence[int],
               cancel: threading.Event | None = None, **kwargs: object) -> dict[int, torch.Tensor]:
    """Run ``ids`` (BOS included) and return ``{layer: (batch, pos, d_mlp)}`` float32, BOS
    included; the pass ends inside the deepest layer unless :func:`full_depth` is on. Extra
    keyword arguments (a KV cache, a mask, positions) go to the bridge's forward; a set
    ``cancel`` stops the pass at the next layer (:func:`cancellable`)."""
    deepest = max(layers)
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def capture(acts: torch.Tensor, hook: object) -> torch.Tensor:
            captured[layer] = model.read(layer, acts).float()  # (batch, pos, units)
            if layer == deepest and not _FULL_DEPTH.get():
                raise _Done
            return acts
        return capture

    with torch.inference_mode():
        try:
            model.bridge.run_with_hooks(
                ids, fwd_hooks=cancellable(model, [(model.hook(layer), hook_for(layer)) for layer in layers], cancel),
                stop_at_layer=None if _FULL_DEPTH.get() else deepest + 1, **kwargs,
            )
        except _Done:
            pass
    return captured


def run_layers(model: LoadedModel, rows: Sequence[Sequence[int]], layers: Sequence[int],
               cancel: threading.Event | None = None) -> dict[int, torch.Tensor]:
    """All neurons of the given layers on a batch of rows: ``{layer: (batch, pos, d_mlp)}``.

    Positions exclude the BOS token. The pass ends inside the deepest requested layer: its hook
    raises once it has what it needs, so no later block, and never the unembedding, runs (the
    bridge's ``stop_at_layer`` still runs the unembedding for the last layer, which costs about
    eight blocks' work on SmolLM2: 576 x 49,152 multiply-adds a token). Activations come back as
    float32 whatever ``model.dtype`` is. A set ``cancel`` stops it at the next layer with
    :class:`store.errors.Cancelled`.
    """
    offset = 0 if model.bos_id is None else 1
    acts = forward_to(model, pack(model, rows), layers, cancel)
    return {layer: a[:, offset:] for layer, a in acts.items()}


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


LONG_WINDOW = 1024
"""Tokens per forward pass when reading a neuron along a long text (see :func:`long_activations`)."""
LONG_OVERLAP = 256
"""Tokens of context that start every window after the first; their outputs are discarded."""
LONG_BATCH_TOKENS = 2 * LONG_WINDOW
"""Padded tokens per pass over a long text. Attention scores take batch x heads x window^2
floats (and a few temporaries of that size): on SmolLM2 (9 heads, layer 0), 20,000 characters of
prose took 0.72 GiB above the loaded model with 8,192-token passes, 0.28 GiB with two windows."""


def _spans(length: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(context_start, output_start, end)`` of each window over ``length`` tokens.

    >>> _spans(10, 4, 1)
    [(0, 0, 4), (3, 4, 7), (6, 7, 10)]
    """
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in 0..window-1, got window={window}, overlap={overlap}")
    spans, start = [], 0
    while start < length:
        context = max(0, start - overlap)
        end = min(length, context + window)
        spans.append((context, start, end))
        start = end
    return spans


def long_activations(model: LoadedModel, layer: int, ids: Sequence[int], neurons: Sequence[int],
                     window: int = LONG_WINDOW, overlap: int = LONG_OVERLAP,
                     max_batch_tokens: int = LONG_BATCH_TOKENS) -> np.ndarray:
    """Neurons' activations along a token sequence of any length, in bounded memory.

    A single pass costs memory growing with the square of the length (attention scores), so a
    long text is cut into windows of ``window`` tokens, run like independent rows (each after its
    own BOS token), several to a pass. Each window after the first starts with ``overlap`` tokens
    already covered, as context only: their outputs are discarded. So:

    - a text of at most ``window`` tokens is one window: exactly the single-pass activations;
    - a later position sees the ``overlap`` to ``window - 1`` tokens before it in its window, not
      the whole text; a neuron that looks back fewer than ``overlap`` tokens is still exact.

    Memory is bounded by ``window`` and ``max_batch_tokens``, whatever the text's length; the
    work is ``window / (window - overlap)`` times a single pass's.

    Args:
        model: the loaded model.
        layer: the layer of the neurons.
        ids: the text's token ids (BOS is added here, before every window).
        neurons: neuron indices of ``layer``.
        window: tokens per window.
        overlap: context tokens that start each later window (0 <= overlap < window).
        max_batch_tokens: padded tokens per forward pass.

    Returns:
        ``(len(ids), len(neurons))`` float32 activations.
    """
    spans = _spans(len(ids), window, overlap)
    rows = [list(ids[context:end]) for context, _, end in spans]
    out = np.zeros((len(ids), len(neurons)), dtype=np.float32)
    for group in _batches([len(r) for r in rows], max_batch_tokens):
        acts = run_layers(model, [rows[i] for i in group], [layer])[layer]  # (batch, pos, d_mlp)
        index = torch.as_tensor(list(neurons), device=acts.device)
        picked = acts[:, :, index].cpu().numpy()  # (batch, pos, neurons)
        for b, i in enumerate(group):
            context, start, end = spans[i]
            out[start:end] = picked[b, start - context:end - context]
    return out


LOGIT_FLOATS = 1 << 27
"""Most logits one pass holds (512 MB in float32, doubled by the log-softmax): at Gemma's 262k
vocabulary an 8,192-token pass would hold 8.6 GB of them."""


def _logit_tokens(model: LoadedModel, max_batch_tokens: int) -> int:
    """The padded tokens a pass that returns logits may hold, for this model's vocabulary."""
    return max(1, min(max_batch_tokens, LOGIT_FLOATS // max(1, len(model.vocab))))


def next_token_logits(model: LoadedModel, rows: Sequence[Sequence[int]],
                      max_batch_tokens: int = 8192) -> list[torch.Tensor]:
    """For each row, the full model's logits predicting each of its tokens: ``(len, d_vocab)``.

    Entry k predicts token k from the tokens before it (the BOS token makes entry 0 defined).
    """
    if model.bos_id is None:
        raise ValueError("next-token predictions for token 0 need a BOS token")
    out: list[torch.Tensor] = [torch.zeros(0)] * len(rows)
    lengths = [len(r) for r in rows]
    for group in _batches(lengths, _logit_tokens(model, max_batch_tokens)):
        ids = pack(model, [rows[i] for i in group])
        with torch.inference_mode():
            logits = model.bridge(ids)  # (batch, 1 + pos, d_vocab)
        for b, i in enumerate(group):
            out[i] = logits[b, :lengths[i]].float().cpu()
    return out


Edits = dict[int, tuple[Sequence[int], torch.Tensor]]
"""Neuron edits for a forward pass: ``{layer: (neurons, values)}``; ``values`` is ``(n,)`` (one
value per neuron, at every position), the replacement activation."""


def edit_hooks(model: LoadedModel, edits: Edits | None, rows: slice = slice(None)) -> list[tuple[str, object]]:
    """Forward hooks that set the edited neurons to their values at every position.

    ``rows`` picks the batch rows edited (all by default): steering runs a clean row and an
    edited row in one pass.
    """
    hooks = []
    for layer, (neurons, values) in (edits or {}).items():
        index = torch.as_tensor(list(neurons), dtype=torch.long)

        def replace(acts: torch.Tensor, hook: object, index=index, values=values) -> torch.Tensor:
            acts[rows, :, index.to(acts.device)] = values.to(acts.device, acts.dtype)  # (batch, pos, units)
            return acts
        hooks += model.unit_hooks(layer, replace)
    return hooks


def cancellable(model: LoadedModel, hooks: Sequence[tuple[str, object]],
                cancel: threading.Event | None) -> list[tuple[str, object]]:
    """``hooks`` (at most one a hook point), with every layer's MLP hook also checking ``cancel``:
    a set event stops the pass at the next layer with :class:`store.errors.Cancelled`. One pass
    of a probe can take most of a minute on a busy CPU; a cancel then frees the model in seconds."""
    if cancel is None:
        return list(hooks)
    by_name = dict(hooks)

    def checking(inner: object):
        def hook(acts: torch.Tensor, hook: object) -> torch.Tensor:
            if cancel.is_set():
                raise Cancelled("the model's pass was cancelled")
            return acts if inner is None else inner(acts, hook)  # type: ignore[operator]
        return hook
    names = [hook_name(model.hook_template, layer) for layer in range(model.n_layers)]  # the neurons' hooks, whatever the units
    return [(name, checking(by_name.pop(name, None))) for name in names] + list(by_name.items())


def _losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``(batch, pos)`` next-token losses of the tokens after BOS, from ``(batch, 1 + pos, vocab)`` logits."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts tokens 1..
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def row_edit_hooks(model: LoadedModel, edits: Sequence[Edits | None]) -> list[tuple[str, object]]:
    """Forward hooks that give each batch row its own edits: row ``b`` gets ``edits[b]`` (None:
    left intact), so that several ablations share one pass. One hook a layer, whatever the rows."""
    by_layer: dict[int, tuple[list[int], list[int], list[torch.Tensor]]] = {}
    for b, row_edits in enumerate(edits):
        for layer, (neurons, values) in (row_edits or {}).items():
            rows, index, vals = by_layer.setdefault(layer, ([], [], []))
            rows += [b] * len(neurons)
            index += list(neurons)
            vals.append(torch.as_tensor(values, dtype=torch.float32).reshape(-1))
    hooks = []
    for layer, (rows, index, vals) in by_layer.items():
        at_rows, at_neurons, values = torch.as_tensor(rows), torch.as_tensor(index), torch.cat(vals)  # (edits,)

        def replace(acts: torch.Tensor, hook: object, at_rows=at_rows, at_neurons=at_neurons,
                    values=values) -> torch.Tensor:
            device = acts.device  # (batch, pos, d_mlp); the indexed view is (edits, pos)
            acts[at_rows.to(device), :, at_neurons.to(device)] = values.to(device, acts.dtype)[:, None]
            return acts
        hooks += model.unit_hooks(layer, replace)
    return hooks


def edited_losses(model: LoadedModel, rows: Sequence[Sequence[int]], edits: Sequence[Edits | None],
                  max_batch_tokens: int = 8192, cancel: threading.Event | None = None) -> list[list[np.ndarray]]:
    """Each row's next-token losses under each of several edits (None: intact), ``[edit][row]``.

    Every (edit, row) pair is one row of a batch, so the edits share passes: a pass holds as
    many as the token budget (and, for the logits, :data:`LOGIT_FLOATS`) allows.

    Raises:
        store.errors.Cancelled: when ``cancel`` is set (checked before every pass, and at every
            layer within it).
    """
    if model.bos_id is None:
        raise ValueError("next-token losses for token 0 need a BOS token")
    jobs = [(e, r) for e in range(len(edits)) for r in range(len(rows))]
    out: list[list[np.ndarray]] = [[np.zeros(0, np.float32)] * len(rows) for _ in edits]
    lengths = [len(rows[r]) for _, r in jobs]
    for group in _batches(lengths, _logit_tokens(model, max_batch_tokens)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("the model's passes were cancelled")
        ids = pack(model, [rows[jobs[j][1]] for j in group])
        hooks = cancellable(model, row_edit_hooks(model, [edits[jobs[j][0]] for j in group]), cancel)
        with torch.inference_mode():
            logits = model.bridge.run_with_hooks(ids, fwd_hooks=hooks)  # (batch, 1 + pos, vocab)
            loss = _losses(logits, ids)  # (batch, pos)
        for b, j in enumerate(group):
            e, r = jobs[j]
            out[e][r] = loss[b, :lengths[j]].cpu().numpy()
    return out


def token_losses(model: LoadedModel, rows: Sequence[Sequence[int]], edits: Edits | None = None,
                 max_batch_tokens: int = 8192, cancel: threading.Event | None = None) -> list[np.ndarray]:
    """Each row's next-token loss at every position, optionally with neurons set to values.

    Entry k of a row is ``-log p(row[k] | BOS, row[:k])``. With ``edits``, the listed neurons'
    activations are replaced at every position (an ablation: zeros, or their mean).

    Raises:
        store.errors.Cancelled: when ``cancel`` is set (checked before every pass, and at every
            layer within it).
    """
    return edited_losses(model, rows, [edits], max_batch_tokens, cancel)[0]


def layers_and_losses(model: LoadedModel, rows: Sequence[Sequence[int]], layers: Sequence[int],
                      cancel: threading.Event | None = None) -> tuple[dict[int, torch.Tensor], np.ndarray]:
    """One full pass over rows of equal length: every neuron of ``layers`` and the next-token losses.

    Returns ``({layer: (batch, pos, d_mlp)}, (batch, pos) losses)``, positions excluding BOS; the
    induction probe reads both (which neurons respond to the copy, and whether the model copies)
    from the same pass. The caller sizes the batch (all rows run at once).

    Raises:
        store.errors.Cancelled: when ``cancel`` is set (checked at every layer).
    """
    if model.bos_id is None:
        raise ValueError("next-token losses for token 0 need a BOS token")
    if len({len(r) for r in rows}) != 1:
        raise ValueError("layers_and_losses takes rows of one length")
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def capture(acts: torch.Tensor, hook: object) -> torch.Tensor:
            captured[layer] = model.read(layer, acts[:, 1:]).float()  # (batch, pos, units)
            return acts
        return capture

    ids = pack(model, rows)
    with torch.inference_mode():
        hooks = cancellable(model, [(model.hook(layer), hook_for(layer)) for layer in layers], cancel)
        logits = model.bridge.run_with_hooks(ids, fwd_hooks=hooks)
        loss = _losses(logits, ids).cpu().numpy()  # (batch, pos)
    return captured, loss
