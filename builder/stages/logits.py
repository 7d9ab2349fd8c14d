"""The output side of every neuron, from the weights: the tokens it promotes and suppresses.

In: a loaded model. Out: for every neuron of every layer, the ``k`` tokens whose logit its
output direction raises most and the ``k`` it lowers most, per unit of activation
(:func:`logit_tables`), written by ``n2g logits`` as ``stores/<model>.logits.npz``
(``store/logitfile.py``). One matmul and two top-k per layer: 36 s of CPU for SmolLM2's 46,080
neurons and 175 s for Gemma 3 270M's 36,864 (its vocabulary is 5x larger) on this 2-core CPU
(124 s and 579 s wall, shared with other jobs).

**The direct path.** Neuron ``n`` of layer ``L`` adds ``a * W_out[L][n]`` to the residual stream
(``a`` its activation at ``blocks.L.mlp.hook_post``, ``W_out[L][n]`` its row of the MLP's
output matrix, ``down_proj``). Were that vector carried to the logits untouched, it would change
them by ``a * W_out[L][n] @ N @ W_U``. We take for ``N`` the linear part of the norms on the way:

- the final norm: its elementwise scale (Llama's ``w``, Gemma's ``1 + w``) and, for a LayerNorm,
  its centring. The per-token division by the residual's size (RMS or standard deviation) is
  left out: a positive number per position, it scales every token's change alike and leaves
  the ranking unchanged. The norm's bias and the unembedding's bias are not the neuron's and
  are left out too;
- where the model normalises the MLP's output before adding it (Gemma's
  ``post_feedforward_layernorm``), that norm's scale likewise; its per-token normalisation,
  which depends on every other neuron of the layer, is left out.

The scale and centring are read by running each norm module on +-1 vectors
(:func:`norm_linear_part`), so every weight convention is handled by the module itself. Each
neuron's logit changes are given relative to their mean over the vocabulary: adding the same to
every logit changes no probability, so a value is what a token gains on the average token (and a
suppressed token's value is below 0).

What this misses: everything between the neuron and the logits but the residual stream's
identity path: attention heads and later MLPs that read the neuron's output and write something
else (``output_effects`` measures the whole effect, beside this one), and the norms'
data-dependent scale, which sets how large the effect is at a given position, not its direction.
Special tokens (``LoadedModel.special_ids``: end of text, Gemma's 6,242 unused tokens) are left
out of the lists; they are control tokens, never text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from builder.models import LoadedModel
from store.logitfile import TOP_K, OutputTokens, TokenValue, write_logit_file
from store.progress import Progress

log = logging.getLogger(__name__)

CHUNK_FLOATS = 1 << 26
"""Most logits one matmul holds (256 MB in float32): 256 neurons at Gemma's 262,144 tokens."""


def norm_linear_part(norm: Callable[[torch.Tensor], torch.Tensor], d_model: int,
                     device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, bool]:
    """A norm's elementwise scale ``(d_model,)`` and whether it centres, with its per-token
    normalisation left out.

    Run on ``x = (+1, -1, +1, ...)`` (mean 0, RMS 1, so nothing is rescaled), a norm returns
    ``x * scale + bias``; ``(norm(x) - norm(-x)) / 2x`` is the scale, whatever the module's
    convention (Gemma stores ``w`` and multiplies by ``1 + w``). A LayerNorm sends the constant
    vector to its bias alone (the centring removes it), an RMSNorm does not.

    >>> scale, centres = norm_linear_part(torch.nn.LayerNorm(4), 4)
    >>> [round(s, 4) for s in scale.tolist()], centres
    ([1.0, 1.0, 1.0, 1.0], True)
    """
    x = torch.ones(d_model, device=device, dtype=dtype)
    x[1::2] = -1
    ones = torch.ones_like(x)
    with torch.inference_mode():
        scale = ((norm(x[None, None]) - norm(-x[None, None]))[0, 0] / (2 * x)).float()  # (d_model,)
        constant = (norm(ones[None, None]) - norm(-ones[None, None]))[0, 0].float()  # (d_model,)
    centres = bool(constant.abs().max() <= 1e-3 * scale.abs().max())
    return scale, centres


@dataclass(frozen=True)
class OutputPath:
    """How each layer's output rows reach the logits: the linear parts of the norms on the way."""

    post_mlp: list[tuple[torch.Tensor, bool]] | None
    """Per layer, the scale and centring of a norm applied to the MLP's output (Gemma's), else None."""
    final: tuple[torch.Tensor, bool]
    """The final norm's scale and centring."""
    unembed: torch.Tensor
    """``(d_model, d_vocab)`` float32, cut to the tokenizer's vocabulary."""

    @staticmethod
    def _apply(rows: torch.Tensor, part: tuple[torch.Tensor, bool]) -> torch.Tensor:
        scale, centres = part
        if centres:
            rows = rows - rows.mean(dim=-1, keepdim=True)
        return rows * scale.to(rows.device)

    def directions(self, layer: int, w_out: torch.Tensor) -> torch.Tensor:
        """``(n, d_model)``: layer ``layer``'s output rows carried through the norms' linear parts."""
        rows = w_out.float()
        if self.post_mlp is not None:
            rows = self._apply(rows, self.post_mlp[layer])
        return self._apply(rows, self.final)

    def logits(self, layer: int, w_out: torch.Tensor) -> torch.Tensor:
        """``(n, d_vocab)``: each row's direct effect on every logit, less its mean over the
        vocabulary (adding the same to every logit changes no probability, so a value says how
        much a token gains on the average token)."""
        logits = self.directions(layer, w_out) @ self.unembed  # (n, d_vocab)
        return logits - logits.mean(dim=1, keepdim=True)

    def describe(self) -> str:
        """The path in words, for the file's readers."""
        def norm(part: tuple[torch.Tensor, bool]) -> str:
            return "centring and scale" if part[1] else "scale"
        post = "" if self.post_mlp is None else (f", the post-MLP norm's {norm(self.post_mlp[0])} (its per-token "
                                                 "normalisation ignored)")
        return (f"direct path: the neuron's row of the MLP output matrix{post}, the final norm's "
                f"{norm(self.final)} (its per-token 1/RMS ignored), the unembedding; values are logit "
                "changes per unit of activation relative to the vocabulary's mean; attention and later "
                "layers left out (output_effects measures them); special tokens excluded")


def output_path(model: LoadedModel) -> OutputPath:
    """The norms between ``model``'s MLP outputs and its logits, and its unembedding."""
    bridge = model.bridge
    d_model = int(bridge.cfg.d_model)
    w_u = bridge.W_U  # (d_model, d_vocab)
    device, dtype = w_u.device, w_u.dtype
    post = None
    if getattr(bridge.blocks[0], "ln2_post", None) is not None:
        post = [norm_linear_part(bridge.blocks[layer].ln2_post, d_model, device, dtype)
                for layer in range(model.n_layers)]
    return OutputPath(post_mlp=post, final=norm_linear_part(bridge.ln_final, d_model, device, dtype),
                      unembed=w_u[:, :len(model.vocab)].float())


def direct_logits(model: LoadedModel, layer: int, neurons: list[int], path: OutputPath | None = None) -> torch.Tensor:
    """``(len(neurons), d_vocab)`` float32: each neuron's direct effect on every token's logit
    per unit of activation (see the module docstring for what it leaves out)."""
    model.check_layer(layer)
    for n in neurons:
        model.check_neuron(n)
    path = path or output_path(model)
    with torch.inference_mode():
        w_out = model.bridge.blocks[layer].mlp.W_out[neurons]  # (n, d_model)
        return path.logits(layer, w_out)  # (n, d_vocab)


def excluded_ids(model: LoadedModel) -> torch.Tensor:
    """The token ids never listed: the model's special tokens (control tokens, not text)."""
    return torch.as_tensor(sorted(i for i in model.special_ids if i < len(model.vocab)), dtype=torch.long)


def top_tokens(logits: torch.Tensor, k: int, excluded: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(promoted ids, values, suppressed ids, values)``, each ``(n, k)``, from ``(n, d_vocab)``
    logits, the ``excluded`` ids never listed. ``logits`` is overwritten."""
    k = min(k, logits.shape[1] - len(excluded))
    excluded = excluded.to(logits.device)
    with torch.inference_mode():  # logits from direct_logits are inference tensors
        logits.index_fill_(1, excluded, -torch.inf)
        up = torch.topk(logits, k, dim=1)  # largest first
        logits.index_fill_(1, excluded, torch.inf)
        down = torch.topk(logits, k, dim=1, largest=False)  # most negative first
    return up.indices, up.values, down.indices, down.values


def output_tokens(model: LoadedModel, logits: torch.Tensor, k: int, note: str) -> OutputTokens:
    """One neuron's lists from its ``(d_vocab,)`` direct logits (not overwritten)."""
    up_i, up_v, down_i, down_v = top_tokens(logits[None].clone(), k, excluded_ids(model))
    def listed(ids: torch.Tensor, values: torch.Tensor) -> list[TokenValue]:
        return [TokenValue(token=model.vocab[int(i)], value=float(v)) for i, v in zip(ids[0], values[0], strict=True)]
    return OutputTokens(promoted=listed(up_i, up_v), suppressed=listed(down_i, down_v), path=note)


def logit_tables(model: LoadedModel, k: int = TOP_K,
                 progress: Progress | None = None) -> tuple[dict[str, np.ndarray], OutputPath]:
    """Every neuron's ``k`` most promoted and suppressed tokens: arrays ``promoted_id``,
    ``promoted_value``, ``suppressed_id``, ``suppressed_value``, each ``(L, d_mlp, k)``."""
    path = output_path(model)
    d_vocab = path.unembed.shape[1]
    chunk = max(1, CHUNK_FLOATS // d_vocab)
    excluded = excluded_ids(model)
    tables: dict[str, list[np.ndarray]] = {"promoted_id": [], "promoted_value": [], "suppressed_id": [],
                                           "suppressed_value": []}
    for layer in range(model.n_layers):
        parts: list[tuple[torch.Tensor, ...]] = []
        with torch.inference_mode():
            w_out = model.bridge.blocks[layer].mlp.W_out  # (d_mlp, d_model)
            for start in range(0, model.d_mlp, chunk):
                logits = path.logits(layer, w_out[start:start + chunk])  # (chunk, d_vocab)
                parts.append(tuple(t.cpu() for t in top_tokens(logits, k, excluded)))
        for index, name in enumerate(tables):
            tables[name].append(torch.cat([p[index] for p in parts]).numpy())  # (d_mlp, k)
        if progress is not None:
            progress(layer + 1, model.n_layers, f"layer {layer}")
    return {name: np.stack(rows) for name, rows in tables.items()}, path


def write_logits(model: LoadedModel, out: Path, k: int = TOP_K, progress: Progress | None = None) -> tuple[Path, float]:
    """Compute every neuron's lists and write them as ``out``; returns the path and the seconds taken."""
    started = time.perf_counter()
    tables, path = logit_tables(model, k, progress)
    seconds = time.perf_counter() - started
    written = write_logit_file(out, model=model.name, vocab=model.vocab, path_note=path.describe(),
                               excluded=len(excluded_ids(model)), **tables)
    log.info("wrote %s in %.0f s", written, seconds)
    return written, seconds
