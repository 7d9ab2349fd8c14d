"""Output effects, measured: what a neuron's firing does to the next token, beside its direct path.

In: a neuron, its top corpus windows cut after their pivot (the token where it fires most), and
the value to raise it to. Out: :class:`store.effects.OutputEffects`: at each pivot, the model's
next-token distribution intact, with the neuron set to 0 there (zeroed), and with it set to
``raised`` there (the caller passes ``scale x`` its corpus max), averaged over the windows, each
edit set beside the direct path's prediction from the weights (``builder.stages.logits``).

The edit touches the pivot only, the position whose prediction is read, so the measured change is
everything the neuron's firing there does to that prediction: its direct path, and the attention
heads and MLPs of later layers that read it at that position. Where the two agree
(``direct_correlation`` near 1), the weights' lists say what the neuron does; where they do not,
it acts through later layers. The three rows of a window run as one pass of one length (no
padding), one window a pass: at Gemma's 262,144-token vocabulary three rows of 64 positions hold
200 MB of logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from builder.forward import pack
from builder.models import LoadedModel
from builder.stages.logits import direct_logits, excluded_ids, output_path, output_tokens, top_tokens
from store.effects import EditEffect, EditKind, OutputEffects, TokenShift
from store.errors import BadArgument


def _pivot_logprobs(model: LoadedModel, layer: int, neuron: int, ids: Sequence[int],
                    raised: float) -> tuple[torch.Tensor, float]:
    """``(3, d_vocab)`` next-token log-probabilities at the pivot (the last token): intact, zeroed,
    raised; and the neuron's own activation there."""
    seen: list[float] = []

    def edit(acts: torch.Tensor, hook: object) -> torch.Tensor:  # (3, pos, d_mlp)
        seen.append(float(acts[0, -1, neuron]))
        acts[1, -1, neuron] = 0.0
        acts[2, -1, neuron] = raised
        return acts

    rows = pack(model, [list(ids)] * 3)  # (3, 1 + pos)
    with torch.inference_mode():
        logits = model.bridge.run_with_hooks(rows, fwd_hooks=model.unit_hooks(layer, edit))
    return torch.log_softmax(logits[:, -1, :len(model.vocab)].float(), dim=-1).cpu(), seen[0]  # (3, d_vocab)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _shifts(model: LoadedModel, ids: np.ndarray, p_clean: np.ndarray, p_edit: np.ndarray, change: np.ndarray,
            direct: np.ndarray) -> list[TokenShift]:
    return [TokenShift(token=model.vocab[i], prob_clean=float(p_clean[i]), prob_edited=float(p_edit[i]),
                       logprob_change=float(change[i]), direct=float(direct[i])) for i in ids.tolist()]


def _effect(model: LoadedModel, kind: EditKind, value: float, activation_change: float, p_clean: np.ndarray,
            p_edit: np.ndarray, change: np.ndarray, kl: float, direct: np.ndarray, top: int) -> EditEffect:
    """One edit's record from its mean probabilities and log-probability changes ``(d_vocab,)``."""
    rise = p_edit - p_clean
    order = np.argsort(-rise, kind="stable")
    sign = 1.0 if activation_change >= 0 else -1.0
    excluded = excluded_ids(model)
    # The tokens the neuron's firing supports here (raised: rose most; zeroed: fell most), beside
    # the direct path's most promoted.
    measured_top = top_tokens(torch.as_tensor(sign * change)[None].clone(), top, excluded)[0][0]
    direct_top = top_tokens(torch.as_tensor(direct)[None].clone(), top, excluded)[0][0]
    return EditEffect(
        kind=kind, value=value, activation_change=activation_change, kl=kl,
        rose=_shifts(model, order[:top], p_clean, p_edit, change, direct),
        fell=_shifts(model, order[::-1][:top], p_clean, p_edit, change, direct),
        direct_correlation=_correlation(change, activation_change * direct),
        direct_overlap=len(set(measured_top.tolist()) & set(direct_top.tolist())))


def output_effects(model: LoadedModel, layer: int, neuron: int, windows: Sequence[Sequence[int]],
                   raised: float, top: int = 10) -> OutputEffects:
    """The neuron's measured effect on the next token at the pivots of ``windows``, zeroed and raised.

    Args:
        model: the loaded model (it needs a BOS token).
        layer, neuron: the neuron.
        windows: token ids of each window up to and including its pivot (the pivot last).
        raised: the raw activation the raised edit sets.
        top: tokens listed each way.

    Raises:
        BadArgument: for no windows, an empty one, or indices the model does not have.
    """
    model.check_layer(layer)
    model.check_neuron(neuron)
    if not windows or not all(windows):
        raise BadArgument("output effects need at least one window with tokens")
    path = output_path(model)
    direct = direct_logits(model, layer, [neuron], path)[0]  # (d_vocab,)
    n = len(windows)
    d_vocab = len(model.vocab)
    probs = np.zeros((3, d_vocab))  # mean next-token probability: intact, zeroed, raised
    change = np.zeros((2, d_vocab))  # mean log-probability change: zeroed, raised
    kl = np.zeros(2)
    clean = []
    for ids in windows:
        logp, own = _pivot_logprobs(model, layer, neuron, ids, raised)  # (3, d_vocab)
        clean.append(own)
        p = logp.exp()
        probs += p.double().numpy() / n
        change += (logp[1:] - logp[:1]).double().numpy() / n
        kl += (p[:1] * (logp[:1] - logp[1:])).sum(dim=-1).clamp_min(0).double().numpy() / n
    mean_clean = float(np.mean(clean))
    direct_np = direct.double().cpu().numpy()
    edits = [_effect(model, kind, value, value - mean_clean, probs[0], probs[1 + i], change[i], float(kl[i]),
                     direct_np, top)
             for i, (kind, value) in enumerate((("zeroed", 0.0), ("raised", float(raised))))]
    return OutputEffects(layer=layer, neuron=neuron, windows=n, activation_clean=mean_clean,
                         static=output_tokens(model, direct, top, path.describe()),
                         zeroed=edits[0], raised=edits[1])
