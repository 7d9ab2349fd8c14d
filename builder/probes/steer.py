"""Steering: what the model writes with neurons clamped on, beside what it writes untouched.

In: neurons, the value each is clamped to (the caller passes ``scale x`` the neuron's corpus max),
a prompt's token ids, how many tokens to generate. Out: two greedy continuations of the prompt,
clean and steered, and the positions whose next-token prediction the clamp changed most
(:class:`store.probes.Steering`).

The clamp holds every listed neuron at its value at every position, the prompt's and the
generated ones, the way Neuronpedia's steering sets a feature. Each step runs the clean and the
steered sequence as two rows of one pass (the edit hooks touch only the second row), with no
cache: ``max_new_tokens`` passes over at most prompt + ``max_new_tokens`` tokens, which the
server caps. Greedy decoding (argmax; ties go to the lower id) makes the result a function of
its inputs. A row that emits a special token (end of text) stops there. The changes are read
teacher-forced on the clean text (prompt + clean continuation), one more pass: at each position,
the KL divergence of the steered next-token distribution from the clean one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from builder.forward import Edits, edit_hooks, pack
from builder.models import LoadedModel
from store.errors import BadArgument, Cancelled
from store.probes import Neuron, PredictionChange, Steering
from store.progress import Progress


def _clamps(neurons: Sequence[Neuron], values: Sequence[float]) -> Edits:
    by_layer: dict[int, tuple[list[int], list[float]]] = {}
    for (layer, n), value in zip(neurons, values, strict=True):
        ns, vs = by_layer.setdefault(layer, ([], []))
        ns.append(n)
        vs.append(value)
    return {layer: (ns, torch.tensor(vs, dtype=torch.float32)) for layer, (ns, vs) in by_layer.items()}


def _logits(model: LoadedModel, rows: Sequence[Sequence[int]], edits: Edits) -> torch.Tensor:
    """``(2, 1 + pos, vocab)`` logits of two rows of one length, the edits on the second only."""
    ids = pack(model, rows)
    with torch.inference_mode():
        return model.bridge.run_with_hooks(ids, fwd_hooks=edit_hooks(model, edits, slice(1, 2))).float()


def _text(model: LoadedModel, ids: Sequence[int]) -> str:
    """Token ids as text: the tokenizer's decoding where it has one, else the token strings joined."""
    decode = getattr(model.tokenizer, "decode", None)
    if decode is not None:
        return str(decode(list(ids)))
    return "".join(model.vocab[i] for i in ids)


def _changes(model: LoadedModel, ids: Sequence[int], edits: Edits, top: int) -> list[PredictionChange]:
    """The positions of ``ids`` whose next-token distribution the edits moved most (KL)."""
    logits = _logits(model, [ids, ids], edits)[:, 1:]  # (2, pos, vocab): entry p predicts ids[p + 1]
    logp = torch.log_softmax(logits, dim=-1)
    kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1).clamp_min(0)  # (pos,)
    out = []
    for p in torch.argsort(kl, descending=True, stable=True)[:top].tolist():
        clean_next, steered_next = int(logp[0, p].argmax()), int(logp[1, p].argmax())
        out.append(PredictionChange(
            position=p, token=model.vocab[ids[p]], clean_next=model.vocab[clean_next],
            clean_prob=float(logp[0, p, clean_next].exp()), steered_next=model.vocab[steered_next],
            steered_prob=float(logp[1, p, steered_next].exp()), kl=float(kl[p])))
    return out


def steer(model: LoadedModel, neurons: Sequence[Neuron], values: Sequence[float], prompt: Sequence[int],
          max_new_tokens: int, top: int = 8, progress: Progress | None = None,
          cancel: threading.Event | None = None) -> Steering:
    """Greedy continuations of ``prompt``, clean and with ``neurons`` clamped to ``values``.

    Args:
        model: the loaded model (it needs a BOS token).
        neurons: ``(layer, neuron)`` pairs.
        values: the raw activation each neuron is held at, at every position.
        prompt: token ids (at least one; BOS is added here).
        max_new_tokens: tokens to generate at most (fewer where both rows reach a special token).
        top: how many most-changed predictions to report.
        progress: told after every generated token.
        cancel: checked before every generated token.

    Raises:
        BadArgument: for no neurons, an empty prompt, or indices the model does not have.
        store.errors.Cancelled: when ``cancel`` is set.
    """
    if not neurons:
        raise BadArgument("no neurons to steer")
    if not prompt:
        raise BadArgument("the prompt has no tokens")
    if model.bos_id is None:
        raise BadArgument(f"{model.name} has no BOS token to generate after")
    for layer, n in neurons:
        model.check_layer(layer)
        model.check_neuron(n)
    edits = _clamps(neurons, values)
    rows = [list(prompt), list(prompt)]
    done = [False, False]
    for step in range(max_new_tokens):
        if cancel is not None and cancel.is_set():
            raise Cancelled("steering was cancelled")
        nxt = _logits(model, rows, edits)[:, -1].argmax(dim=-1).tolist()  # (2,) greedy next ids
        for r in range(2):
            if not done[r]:
                done[r] = nxt[r] in model.special_ids
                rows[r].append(nxt[r])
            else:  # keeps both rows one length; cut below
                rows[r].append(rows[r][-1])
        if progress is not None:
            progress(step + 1, max_new_tokens, "generating clean and steered")
        if all(done):
            break
    continuations = []
    for row in rows:
        new = row[len(prompt):]
        stop = next((i for i, t in enumerate(new) if t in model.special_ids), len(new))
        continuations.append(new[:stop])
    clean, steered = continuations
    return Steering(neurons=list(neurons), values=[float(v) for v in values], prompt_tokens=len(prompt),
                    clean_text=_text(model, clean), steered_text=_text(model, steered),
                    clean_tokens=[model.vocab[i] for i in clean],
                    steered_tokens=[model.vocab[i] for i in steered],
                    changes=_changes(model, list(prompt) + clean, edits, top))
