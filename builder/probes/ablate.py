"""Ablation: a causal check that neurons matter for the model's predictions.

In: neurons, a text (or, by default, the induction probe's repeated random sequences, the
standard protocol of ``builder.probes.induction``), a mode. Out: the model's next-token loss
clean and with the neurons ablated, on the tokens that test them (the second copy of each repeated
sequence; every token of a given text), and, as a control, the same for as many random neurons
drawn from the same layers. A rise well above the control's says the neurons carry something
the model uses; a rise no larger says they do not, here. On the probe the clean loss on the
first copies is reported too: only where it stands far above the second copies' does the model
copy, and only there can copying neurons matter. With ``each``, every neuron is also ablated on
its own (one pass each), which says which of them carry the effect.

Modes: ``zero`` sets the activations to 0; ``mean`` sets each to its mean over the scan's random
corpus windows (or, without a scan, over the text itself), which removes the neuron's
information without pushing the layer off its usual range.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from builder.forward import Edits, run_layers, token_losses
from builder.models import LoadedModel
from builder.probes.induction import LENGTH, SEQUENCES, copy_positions, repeated_sequences
from store.errors import BadArgument, Cancelled
from store.probes import Ablation, AblationMode, NeuronEffect, TokenChange


def _edits(model: LoadedModel, neurons: Sequence[tuple[int, int]], mode: AblationMode,
           means: dict[int, np.ndarray] | None, rows: np.ndarray) -> Edits:
    by_layer: dict[int, list[int]] = {}
    for layer, n in neurons:
        by_layer.setdefault(layer, []).append(n)
    edits: Edits = {}
    for layer, ns in by_layer.items():
        if mode == "zero":
            values = torch.zeros(len(ns))
        elif means is not None and layer in means:
            values = torch.as_tensor(means[layer][ns], dtype=torch.float32)
        else:  # no scan: the neurons' mean over the text itself
            acts = run_layers(model, rows.tolist(), [layer])[layer]  # (batch, pos, d_mlp)
            values = acts[..., ns].mean(dim=(0, 1)).float().cpu()
        edits[layer] = (ns, values)
    return edits


def control_neurons(model: LoadedModel, neurons: Sequence[tuple[int, int]],
                    seed: int) -> list[tuple[int, int]]:
    """As many random neurons per layer as ``neurons`` has there, none of them (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = set(neurons)
    out = []
    for layer in sorted({layer for layer, _ in neurons}):
        count = sum(1 for lay, _ in neurons if lay == layer)
        pool = [n for n in range(model.d_mlp) if (layer, n) not in chosen]
        out += [(layer, int(n)) for n in sorted(rng.choice(pool, size=min(count, len(pool)),
                                                           replace=False))]
    return out


def ablate(model: LoadedModel, neurons: Sequence[tuple[int, int]], text: str | None = None,
           mode: AblationMode = "zero", control: bool = True, means: dict[int, np.ndarray] | None = None,
           sequences: int = SEQUENCES, length: int = LENGTH, seed: int = 0, top: int = 8,
           each: bool = False, cancel: threading.Event | None = None) -> Ablation:
    """Ablate neurons and measure the next-token loss (see the module docstring).

    Args:
        model: the loaded model.
        neurons: ``(layer, neuron)`` pairs.
        text: the text to measure on; None for the repeated-sequence probe (loss on the copies).
        mode: ``zero`` or ``mean``.
        control: also ablate as many random neurons of the same layers.
        means: per layer, ``(d_mlp,)`` corpus mean activations for ``mean`` mode.
        sequences, length, seed: the probe's size and seed (the default: the probe's first
            seed's sequences); the seed also draws the control.
        top: how many most-changed tokens to report.
        each: also ablate every neuron on its own (one more pass each; the caller caps how many).
        cancel: checked before every forward pass.

    Raises:
        BadArgument: for no neurons, or a text with fewer than two tokens.
        store.errors.Cancelled: when ``cancel`` is set.
    """
    if not neurons:
        raise BadArgument("no neurons to ablate")
    for layer, n in neurons:
        model.check_layer(layer)
        model.check_neuron(n)
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

    def loss_with(chosen: Sequence[tuple[int, int]] | None) -> tuple[float, np.ndarray]:
        if cancel is not None and cancel.is_set():  # before the mean mode's own pass, too
            raise Cancelled("the ablation was cancelled")
        edits = None if chosen is None else _edits(model, chosen, mode, means, rows)
        flat = np.stack(token_losses(model, rows.tolist(), edits, cancel=cancel))  # (rows, pos)
        return float(flat[measured].mean()), flat

    clean, clean_flat = loss_with(None)
    ablated, ablated_flat = loss_with(neurons)
    controls: list[tuple[int, int]] = []
    control_delta = None
    if control:
        controls = control_neurons(model, neurons, seed)
        control_delta = loss_with(controls)[0] - clean
    effects = []
    if each:  # ranked at full precision, before the deltas are rounded
        deltas = sorted(((loss_with([(layer, n)])[0] - clean, layer, n) for layer, n in neurons),
                        key=lambda e: (-e[0], e[1], e[2]))
        effects = [NeuronEffect(layer=layer, neuron=n, delta=delta) for delta, layer, n in deltas]
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
                    delta=ablated - clean, control_neurons=controls, control_delta=control_delta,
                    tokens_measured=int(measured.sum()), top_changes=changes,
                    loss_first_copy=None if text is not None else float(clean_flat[:, first_at].mean()),
                    each=effects)
