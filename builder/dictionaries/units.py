"""A dictionary as a unit source: its latents read, and edited, at the model's hook points.

A :class:`DictionaryLayer` is one layer's encoder and decoder, whatever file it came from
(``builder.dictionaries.formats``): ``z = act(W_enc^T (x - b_dec?) + b_enc)`` where ``act`` is
ReLU, JumpReLU (``pre * (pre > threshold)``) or TopK after ReLU, and ``x_hat = z W_dec + b_dec
(+ x W_skip)``. ``x`` is read at ``hook_in`` and the reconstruction lives at ``hook_out`` (the
same hook for an SAE; MLP input and MLP output for a transcoder).

A latent's *activation* is ``z[index]`` computed from the hook's activations in the very pass
that reads neurons (``builder.forward``), so every stage reads latents the way it reads neurons.
A latent is *edited* (ablated, clamped, steered) by adding ``(value - z[index]) * W_dec[index]``
at ``hook_out``: the model's own activation plus the change the latent's decoder row makes, so
the dictionary's reconstruction error stays in and an edit to a latent's own value changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from store.errors import DictionaryError


@dataclass
class DictionaryLayer:
    """One layer's dictionary, in float32, SAELens's orientation (``W_enc (d_in, M)``, ``W_dec (M, d_out)``)."""

    path: Path
    layer: int
    hook_in: str
    hook_out: str
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor | None
    k: int | None
    activation: str
    """``relu``, ``jumprelu`` or ``topk``."""
    b_dec_in: bool
    """Whether ``b_dec`` is subtracted from the input before encoding."""
    W_skip: torch.Tensor | None = None
    """``(d_in, d_out)`` a transcoder's affine skip, or None."""

    @classmethod
    def checked(cls, **fields: object) -> DictionaryLayer:
        """A layer whose tensors agree in shape, else :class:`DictionaryError` naming the file."""
        one = cls(**fields)  # type: ignore[arg-type]
        path = one.path
        if one.W_enc.ndim != 2 or one.W_dec.ndim != 2:
            raise DictionaryError(f"{path}: encoder and decoder must be matrices, got shapes "
                                  f"{tuple(one.W_enc.shape)} and {tuple(one.W_dec.shape)}")
        d_in, m = one.W_enc.shape
        if one.W_dec.shape[0] != m:
            raise DictionaryError(f"{path}: the encoder has {m} latents (W_enc {tuple(one.W_enc.shape)}) "
                                  f"but the decoder {one.W_dec.shape[0]} (W_dec {tuple(one.W_dec.shape)})")
        d_out = one.W_dec.shape[1]
        shapes = {"b_enc": (one.b_enc, (m,)), "b_dec": (one.b_dec, (d_out,))}
        if one.threshold is not None:
            shapes["threshold"] = (one.threshold, (m,))
        if one.W_skip is not None:
            shapes["skip"] = (one.W_skip, (d_in, d_out))
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise DictionaryError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                                      f"for {m} latents over {d_in} inputs")
        if one.hook_in == one.hook_out and d_in != d_out:
            raise DictionaryError(f"{path}: an SAE must read and write the same width, got {d_in} -> {d_out}")
        if one.k is not None and not 0 < one.k <= m:
            raise DictionaryError(f"{path}: k={one.k} must be in 1..{m}")
        return one

    @property
    def width(self) -> int:
        """Latents in this layer."""
        return int(self.W_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Every latent's activation: ``(..., d_in) -> (..., M)``."""
        x = x.float()
        if self.b_dec_in:
            x = x - self.b_dec.to(x.device)
        pre = x @ self.W_enc.to(x.device) + self.b_enc.to(x.device)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold.to(x.device))  # type: ignore[union-attr]
        pre = torch.relu(pre)
        if self.activation == "topk":
            values, index = pre.topk(self.k, dim=-1)  # type: ignore[arg-type]
            return torch.zeros_like(pre).scatter_(-1, index, values)
        return pre

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction ``(..., M) -> (..., d_out)`` (the skip connection needs the input ``x``)."""
        out = z @ self.W_dec.to(z.device) + self.b_dec.to(z.device)
        if self.W_skip is not None and x is not None:
            out = out + x.float() @ self.W_skip.to(z.device)
        return out

    def delta(self, z: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The change at ``hook_out`` that sets latents ``index`` to ``values``: ``(..., d_out)``.

        ``z`` ``(..., M)`` is the intact activation; ``values`` broadcast against ``z[..., index]``.
        """
        change = values.to(z.device, z.dtype) - z[..., index]
        return change @ self.W_dec[index].to(z.device)


@dataclass
class Dictionary:
    """A named dictionary over some layers of one model (``units`` in tools and store files)."""

    name: str
    model: str
    layers: dict[int, DictionaryLayer]
    source: str
    quality: dict | None = field(default=None)
    """``quality.json`` beside the files (FVU, L0, dead latents, spliced loss), when present."""

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (shapes and a sample of each encoder), naming caches so a
        changed dictionary under an old name is never served an old scan."""
        import hashlib

        h = hashlib.sha1()
        for layer, one in sorted(self.layers.items()):
            h.update(f"{layer}:{one.hook_in}:{tuple(one.W_enc.shape)}:{one.activation}:{one.k}".encode())
            h.update(one.W_enc[:, :64].contiguous().numpy().tobytes())
            h.update(one.b_enc.numpy().tobytes())
        return h.hexdigest()[:10]

    @property
    def width(self) -> int:
        """The widest layer's latents (ids run ``F0`` to ``F{width-1}``)."""
        return max(layer.width for layer in self.layers.values())

    def layer(self, layer: int) -> DictionaryLayer:
        """The dictionary at one layer, else :class:`DictionaryError` listing the layers it has."""
        try:
            return self.layers[layer]
        except KeyError:
            raise DictionaryError(f"dictionary {self.name!r} has no layer {layer}; it covers layers "
                                  f"{', '.join(map(str, self.layers))}") from None


def latent_edit_hooks(one: DictionaryLayer, edit) -> list[tuple[str, object]]:
    """Forward hooks that run ``edit`` (a neuron-style hook, ``(acts, hook) -> acts`` over
    ``(batch, pos, M)`` latents) on the layer's latents and add the change it made, through the
    decoder, at ``hook_out``: the model's activation plus ``(z' - z) W_dec``, the reconstruction
    error kept (an edit that changes nothing leaves the pass exactly intact)."""
    seen: dict[str, torch.Tensor] = {}

    def apply(out: torch.Tensor, z: torch.Tensor, hook: object) -> torch.Tensor:
        edited = edit(z.clone(), hook)
        change = (edited - z).reshape(-1, z.shape[-1])
        rows = change.abs().sum(0).nonzero().flatten()  # the latents touched: usually one or a few
        delta = change[:, rows] @ one.W_dec[rows].to(z.device)
        return out + delta.reshape(*out.shape[:-1], -1).to(out.dtype)

    if one.hook_in == one.hook_out:
        def same(acts: torch.Tensor, hook: object) -> torch.Tensor:
            return apply(acts, one.encode(acts), hook)
        return [(one.hook_in, same)]

    def read(acts: torch.Tensor, hook: object) -> torch.Tensor:
        seen["z"] = one.encode(acts)
        return acts

    def write(acts: torch.Tensor, hook: object) -> torch.Tensor:
        return apply(acts, seen.pop("z"), hook)
    return [(one.hook_in, read), (one.hook_out, write)]
