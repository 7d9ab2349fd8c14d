"""Ablation: a causal check that neurons matter for the model's predictions.

In: neurons, a text (or, by default, the induction probe's repeated random sequences, the
standard protocol of ``builder.probes.induction``), a mode. Out: the model's next-token loss
clean and with the neurons ablated, on the tokens that test them (the second copy of each repeated
sequence; every token of a given text), and, as controls, the same for several random draws
(:data:`store.probes.CONTROL_DRAWS`) of as many neurons of the same layers. A rise that ranks
above every draw's, far beyond their spread, says the neurons carry something the model uses; a
rise among them says they do not, here. On the probe the clean loss on the first copies is
reported too: only where it stands far above the second copies' does the model copy, and only
there can copying neurons matter; a given text that holds a span twice (:func:`repeated_span`)
gets the same split of its copies. With ``each``, every neuron is also ablated on its own, which
says which of them carry the effect. All these runs share batched passes.

Modes: ``zero`` sets the activations to 0; ``mean`` sets each to its mean over the scan's random
corpus windows (or, without a scan, over the text itself), which removes the neuron's
information without pushing the layer off its usual range.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from builder.forward import Edits, edited_losses, run_layers
from builder.models import LoadedModel
from builder.probes.induction import LENGTH, SEQUENCES, copy_positions, repeated_sequences
from store.errors import BadArgument, Cancelled
from store.probes import CONTROL_DRAWS, MIN_COPY, Ablation, AblationMode, CopyLosses, Neuron, NeuronEffect, TokenChange


def repeated_span(ids: Sequence[int], shortest: int = MIN_COPY) -> tuple[int, int, int] | None:
    """The longest span (the first among equals) of at least ``shortest`` tokens that the text
    holds twice (the copies not overlapping), grown as long as the copies agree:
    ``(first_at, second_at, length)``, or None.

    Copies are looked for from the start; once one is found the search goes on after it, so a
    text that repeats its first half, or holds one pasted passage twice, is found in one sweep.

    >>> repeated_span([7, 1, 2, 3, 4, 5, 6, 9, 1, 2, 3, 4, 5, 6], shortest=3)
    (1, 8, 6)
    >>> repeated_span([1, 2, 3, 1, 2], shortest=3) is None
    True
    """
    seen: dict[tuple[int, ...], int] = {}
    best: tuple[int, int, int] | None = None
    j, n = 0, len(ids)
    while j + shortest <= n:
        i = seen.setdefault(tuple(ids[j:j + shortest]), j)
        if i + shortest <= j:  # an earlier occurrence that this one does not overlap
            length = shortest
            while j + length < n and i + length < j and ids[i + length] == ids[j + length]:
                length += 1
            if best is None or length > best[2]:
                best = (i, j, length)
            j += length
        else:
            j += 1
    return best


def _replacements(model: LoadedModel, layers: Sequence[int], mode: AblationMode,
                  means: dict[int, np.ndarray] | None, rows: np.ndarray) -> dict[int, torch.Tensor]:
    """Per layer, every neuron's ablated value ``(d_mlp,)``: 0, its corpus mean, or (no scan)
    its mean over the measured text itself (one pass for every such layer, shared by every
    ablation)."""
    if mode == "zero":
        return {layer: torch.zeros(model.d_mlp) for layer in layers}
    values = {layer: torch.as_tensor(means[layer], dtype=torch.float32)
              for layer in layers if means is not None and layer in means}
    missing = [layer for layer in layers if layer not in values]
    if missing:
        acts = run_layers(model, rows.tolist(), missing)  # {layer: (batch, pos, d_mlp)}
        values |= {layer: acts[layer].mean(dim=(0, 1)).float().cpu() for layer in missing}
    return values


def _edits(neurons: Sequence[Neuron], values: dict[int, torch.Tensor]) -> Edits:
    by_layer: dict[int, list[int]] = {}
    for layer, n in neurons:
        by_layer.setdefault(layer, []).append(n)
    return {layer: (ns, values[layer][ns]) for layer, ns in by_layer.items()}


def control_sets(model: LoadedModel, neurons: Sequence[Neuron], seed: int, draws: int) -> list[list[Neuron]]:
    """``draws`` random controls, each as many neurons per layer as ``neurons`` has there, none of
    them (seeded; the first draw is the one control earlier releases drew)."""
    rng = np.random.default_rng(seed)
    chosen, counts = set(neurons), Counter(layer for layer, _ in neurons)
    pools = {layer: [n for n in range(model.d_mlp) if (layer, n) not in chosen] for layer in counts}
    sets = []
    for _ in range(draws):
        draw: list[Neuron] = []
        for layer in sorted(counts):
            size = min(counts[layer], len(pools[layer]))
            draw += [(layer, int(n)) for n in sorted(rng.choice(pools[layer], size=size, replace=False))]
        sets.append(draw)
    return sets


def ablate(model: LoadedModel, neurons: Sequence[Neuron], text: str | None = None,
           mode: AblationMode = "zero", controls: int = CONTROL_DRAWS, means: dict[int, np.ndarray] | None = None,
           sequences: int = SEQUENCES, length: int = LENGTH, seed: int = 0, top: int = 8,
           each: bool = False, cancel: threading.Event | None = None) -> Ablation:
    """Ablate neurons and measure the next-token loss (see the module docstring).

    The intact run, the ablation, every control draw and (with ``each``) every neuron alone are
    rows of the same batches (``builder.forward.edited_losses``): what they cost is tokens, not
    separate passes.

    Args:
        model: the loaded model.
        neurons: ``(layer, neuron)`` pairs, in the caller's order (``each`` reports each one's place).
        text: the text to measure on; None for the repeated-sequence probe (loss on the copies).
        mode: ``zero`` or ``mean``.
        controls: how many random draws of as many neurons of the same layers to ablate beside
            them (0: none).
        means: per layer, ``(d_mlp,)`` corpus mean activations for ``mean`` mode.
        sequences, length, seed: the probe's size and seed (the default: the probe's first
            seed's sequences); the seed also draws the controls.
        top: how many most-changed tokens to report.
        each: also ablate every neuron on its own (one more run each; the caller caps how many).
        cancel: checked before every forward pass, and at every layer within it.

    Raises:
        BadArgument: for no neurons, or a text with fewer than two tokens.
        store.errors.Cancelled: when ``cancel`` is set.
    """
    if not neurons:
        raise BadArgument("no neurons to ablate")
    for layer, n in neurons:
        model.check_layer(layer)
        model.check_neuron(n)
    copies = None
    if text is None:
        rows = repeated_sequences(model, sequences, length, seed)
        first_at, second_at = copy_positions(length)
        measured = np.zeros(rows.shape, dtype=bool)
        measured[:, second_at] = True  # the copy, after its first token (not predictable)
    else:
        ids = model.encode(text)
        if len(ids) < 2:
            raise BadArgument("the text needs at least two tokens to measure a loss")
        rows = np.asarray([ids])
        measured = np.ones(rows.shape, dtype=bool)
        measured[:, 0] = False  # the first token follows only BOS
        copies = repeated_span(ids)

    if cancel is not None and cancel.is_set():  # before the mean mode's own passes, too
        raise Cancelled("the ablation was cancelled")
    values = _replacements(model, sorted({layer for layer, _ in neurons}), mode, means, rows)
    draws = control_sets(model, neurons, seed, controls)
    alone = [[pair] for pair in neurons] if each else []
    runs = [None, list(neurons), *draws, *alone]
    started, tokens_before = time.perf_counter(), model.tokens_forwarded
    flats = [np.stack(losses) for losses in edited_losses(  # each (rows, pos)
        model, rows.tolist(), [None if chosen is None else _edits(chosen, values) for chosen in runs],
        cancel=cancel)]
    seconds, tokens_run = time.perf_counter() - started, model.tokens_forwarded - tokens_before
    clean_flat, ablated_flat = flats[0], flats[1]
    clean, ablated = float(clean_flat[measured].mean()), float(ablated_flat[measured].mean())
    control_deltas = [float(f[measured].mean()) - clean for f in flats[2:2 + len(draws)]]
    # Ranked at full precision, before the deltas are rounded.
    own = sorted(((float(f[measured].mean()) - clean, given, pair)
                  for given, (pair, f) in enumerate(zip(neurons, flats[2 + len(draws):]), 1)),
                 key=lambda e: (-e[0], e[2]))  # empty unless each
    effects = [NeuronEffect(layer=layer, neuron=n, delta=delta, given=given) for delta, given, (layer, n) in own]

    change = np.where(measured, np.abs(ablated_flat - clean_flat), -np.inf)
    order = np.argsort(change, axis=None)[::-1][:top]
    changes = []
    for flat_index in order:
        r, p = np.unravel_index(flat_index, change.shape)
        if not np.isfinite(change[r, p]):
            break
        changes.append(TokenChange(position=int(p), token=model.vocab[int(rows[r, p])],
                                   loss_clean=float(clean_flat[r, p]),
                                   loss_ablated=float(ablated_flat[r, p])))
    return Ablation(neurons=list(neurons), loss_clean=clean, loss_ablated=ablated,
                    delta=ablated - clean, control_neurons=draws[0] if draws else [],
                    control_deltas=control_deltas, tokens_measured=int(measured.sum()), top_changes=changes,
                    loss_first_copy=None if text is not None else float(clean_flat[:, first_at].mean()),
                    each=effects, copies=None if copies is None else _copy_losses(copies, flats, len(draws)),
                    tokens_run=tokens_run, seconds=seconds)


def _copy_losses(span: tuple[int, int, int], flats: list[np.ndarray], draws: int) -> CopyLosses:
    """The losses on each copy of a repeated span of a given text (one row), each copy's first
    token left out as on the probe."""
    first_at, second_at, length = span
    first, second = slice(first_at + 1, first_at + length), slice(second_at + 1, second_at + length)
    clean_second = float(flats[0][0, second].mean())
    controls = [float(f[0, second].mean()) - clean_second for f in flats[2:2 + draws]]
    return CopyLosses(span=length, first_at=first_at, second_at=second_at,
                      loss_first_copy=float(flats[0][0, first].mean()), loss_second_copy=clean_second,
                      loss_second_copy_ablated=float(flats[1][0, second].mean()),
                      delta_second_copy=float(flats[1][0, second].mean()) - clean_second,
                      control_delta_second_copy=sum(controls) / len(controls) if controls else None)
