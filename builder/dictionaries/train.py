"""Training the embedded TopK dictionary: activations of the build split, then one TopK SAE a layer.

Two resumable steps, both under ``$N2G_CACHE/dictionaries/<model>/<hook kind>/``:

1. :func:`collect`: one pass over the embedded corpus's *build* windows (``make_windows(part=
   "build")``: the held-out documents are never read for training), stopping inside the deepest
   layer, writing every chosen layer's activations (BOS position excluded) to a float16 memmap.
   A finished layer file is marked by its ``.done`` twin; a killed pass starts again.
2. :func:`train_layer`: a TopK sparse autoencoder (Gao et al. 2024, as EleutherAI's sparsify
   trains it): ``z = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec^T z + b_dec``,
   Adam on the mean squared error, decoder rows kept unit norm (their gradient's parallel part
   removed before each step, renormalised after), and AuxK for dead latents (those that did not
   fire over the last ``dead_tokens`` tokens predict the residual with their top ``k_aux``
   pre-activations). Inputs are divided by one scale a layer while training (their mean norm,
   so the learning rate suits every layer); the scale is folded back into ``b_enc`` and
   ``b_dec`` on saving, so the saved dictionary reads raw activations. A checkpoint is saved
   after every epoch; a finished layer is its sparsify folder (``layers.N.mlp``), saved by
   :func:`builder.dictionaries.formats.save_sparsify`.

Run it with ``n2g dictionary train`` (``n2g_mcp/cli/dictionary.py``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from builder.corpus import make_windows
from builder.forward import run_layers
from builder.models import LoadedModel
from store.models import cache_dir
from store.names import file_safe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How the embedded dictionary is trained (every figure recorded in its ``train.json``)."""

    layers: tuple[int, ...] = (7, 15, 19, 25)
    """SmolLM2's 30 layers at 25/50/65/85% depth, as Gemma Scope 2 picks four depths."""
    hook: str = "blocks.{layer}.hook_mlp_out"
    """The MLP's output: what the layer's 1,536 neurons write, so its latents and those neurons
    decompose the same vector (the neurons-vs-latents comparison is like for like), and the hook
    EleutherAI's published SmolLM2 SAEs use (sparsify's ``layers.N.mlp``)."""
    num_latents: int = 3072
    """Latents a layer: 4 layers x 3,072 x 576 x 2 matrices x 2 bytes = 28 MB at float16."""
    k: int = 32
    window: int = 64
    """Tokens per corpus window, as the scan's (``ScanConfig.window``)."""
    epochs: int = 3
    batch: int = 1024
    """Tokens a step."""
    lr: float = 4e-4
    """sparsify's rule, 2e-4 / sqrt(latents / 2^14), gives 4.6e-4 at 3,072 latents."""
    warmup: int = 100
    auxk_alpha: float = 1 / 32
    dead_tokens: int = 200_000
    """A latent that has not fired over this many training tokens is dead (for AuxK)."""
    seed: int = 0
    threads: int = 1
    """Torch threads while training: on a CPU shared with other work, two threads ran 3.4x slower
    than one (800 against 2,750 tokens/s a step, measured side by side), spinning on each other."""


def work_dir(model: LoadedModel, config: TrainConfig) -> Path:
    """The cache folder of one model's training activations and checkpoints."""
    kind = config.hook.split(".")[-1]
    return cache_dir() / "dictionaries" / file_safe(model.name) / kind


def collect(model: LoadedModel, config: TrainConfig, rows_a_pass: int = 64) -> dict[int, np.memmap]:
    """Every chosen layer's activations on the build split: ``{layer: (tokens, d_model)}`` float16.

    Reuses finished files; otherwise one pass writes them all (BOS position left out: it is an
    attention sink, never a scan token, and its huge norm would dominate the loss).
    """
    out = work_dir(model, config)
    out.mkdir(parents=True, exist_ok=True)
    d = int(model.bridge.cfg.d_model)
    paths = {layer: out / f"L{layer}.f16" for layer in config.layers}
    windows = make_windows(model, None, config.window, part="build")
    shape = (len(windows) * config.window, d)
    if all(p.with_suffix(".done").exists() for p in paths.values()):
        return {layer: np.memmap(p, np.float16, "r", shape=shape) for layer, p in paths.items()}
    maps = {layer: np.memmap(p, np.float16, "w+", shape=shape) for layer, p in paths.items()}
    at_hook = replace(model, hook_template=config.hook, units=None)  # reads the hook, not the neurons
    start, t0 = 0, time.time()
    while start < len(windows):
        rows = windows[start:start + rows_a_pass]
        captured = run_layers(at_hook, rows.tolist(), config.layers)  # BOS left out, the pass stopped early
        lo, hi = start * config.window, (start + len(rows)) * config.window
        for layer, acts in captured.items():
            maps[layer][lo:hi] = acts.reshape(-1, d).cpu().numpy().astype(np.float16)
        start += len(rows)
        if start % (rows_a_pass * 20) == 0:
            rate = start * config.window / (time.time() - t0)
            log.info("collected %d/%d windows (%.0f tokens/s)", start, len(windows), rate)
    for layer, path in paths.items():
        maps[layer].flush()
        path.with_suffix(".done").write_text(json.dumps({"shape": shape}))
    return {layer: np.memmap(p, np.float16, "r", shape=shape) for layer, p in paths.items()}


class _TopKEncoder(torch.autograd.Function):
    """``TopK(ReLU(x W^T + b))`` whose backward touches only the k chosen latents of each row.

    The dense backward (two more ``(batch, M, d)`` products) was 4/5 of a step on this CPU; the
    gradient of the pre-activations is zero off the top k, so ``index_add`` over the k entries
    gives the same gradient (the trick sparsify's ``fused_encoder`` uses).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, k: int):  # type: ignore[override]
        pre = torch.relu(torch.nn.functional.linear(x, weight, bias))
        values, index = pre.topk(k, dim=-1, sorted=False)
        ctx.save_for_backward(x, weight, index, values > 0)
        return values, index

    @staticmethod
    def backward(ctx, grad_values, grad_index):  # type: ignore[override]
        x, weight, index, live = ctx.saved_tensors
        g = grad_values * live  # ReLU's gradient
        grad_x = torch.nn.functional.embedding_bag(index, weight, mode="sum", per_sample_weights=g)
        grad_w = torch.zeros_like(weight)
        grad_w.index_add_(0, index.flatten(), (g[..., None] * x[:, None]).reshape(-1, x.shape[1]))
        grad_b = torch.zeros(weight.shape[0], dtype=weight.dtype).index_add_(0, index.flatten(), g.flatten())
        return grad_x, grad_w, grad_b, None


class TopK(torch.nn.Module):
    """A TopK sparse autoencoder in sparsify's parameter names (``encoder`` (M, d), ``W_dec`` (M, d))."""

    def __init__(self, d: int, m: int, k: int, generator: torch.Generator) -> None:
        super().__init__()
        self.k = k
        w = torch.randn(m, d, generator=generator)
        w /= w.norm(dim=1, keepdim=True)
        self.encoder = torch.nn.Linear(d, m)
        self.encoder.weight.data.copy_(w)
        self.encoder.bias.data.zero_()
        self.W_dec = torch.nn.Parameter(w.clone())
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor, dead: torch.Tensor | None, k_aux: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(squared error summed, AuxK loss summed, top indices)`` of a batch."""
        centred = x - self.b_dec
        acts, index = _TopKEncoder.apply(centred, self.encoder.weight, self.encoder.bias, self.k)
        x_hat = torch.nn.functional.embedding_bag(index, self.W_dec, mode="sum",
                                                  per_sample_weights=acts) + self.b_dec
        err = x - x_hat
        aux = x.new_zeros(())
        dead_index = dead.nonzero().flatten() if dead is not None else None
        if dead_index is not None and len(dead_index):
            # Only the dead latents' pre-activations: the cost grows with how many are dead.
            n = min(k_aux, len(dead_index))
            pre = torch.relu(centred.detach() @ self.encoder.weight[dead_index].T + self.encoder.bias[dead_index])
            aux_acts, aux_at = pre.topk(n, dim=-1, sorted=False)
            e_hat = torch.nn.functional.embedding_bag(dead_index[aux_at], self.W_dec, mode="sum",
                                                      per_sample_weights=aux_acts)
            aux = min(len(dead_index) / k_aux, 1.0) * (e_hat - err.detach()).pow(2).sum()
        return err.pow(2).sum(), aux, index

    @torch.no_grad()
    def unit_decoder(self) -> None:
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True) + 1e-8

    @torch.no_grad()
    def drop_parallel_grad(self) -> None:
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec.data).sum(1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec.data


def train_layer(acts: np.ndarray, config: TrainConfig, checkpoint: Path) -> tuple[TopK, float, dict]:
    """Train one layer's TopK SAE on ``acts`` ``(tokens, d)``; returns it, the input scale, and its log.

    Resumes from ``checkpoint`` (saved after each epoch) when it exists.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.enable_grad():  # loading a model turns gradients off for the whole process
            return _train_layer(acts, config, checkpoint)
    finally:
        torch.set_num_threads(threads)


def _train_layer(acts: np.ndarray, config: TrainConfig, checkpoint: Path) -> tuple[TopK, float, dict]:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n, d = acts.shape
    sample = torch.from_numpy(np.asarray(acts[:: max(1, n // 20000)], dtype=np.float32))
    scale = float(sample.norm(dim=1).mean())
    sae = TopK(d, config.num_latents, config.k, gen)
    sae.b_dec.data.copy_(sample.median(0).values / scale)  # a cheap stand-in for the geometric median
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr, betas=(0.9, 0.999))
    steps_per_epoch = n // config.batch
    total = steps_per_epoch * config.epochs
    since_fired = torch.zeros(config.num_latents, dtype=torch.long)
    history: list[dict] = []
    first_epoch = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        since_fired, history, first_epoch = state["since_fired"], state["history"], state["epoch"] + 1
        log.info("resumed %s at epoch %d", checkpoint.name, first_epoch)
    k_aux = d // 2
    for epoch in range(first_epoch, config.epochs):
        order = np.random.default_rng(config.seed + epoch).permutation(n)
        sums = {"se": 0.0, "var": 0.0, "aux": 0.0}
        t0 = time.time()
        for step in range(steps_per_epoch):
            at = epoch * steps_per_epoch + step
            lr = config.lr * min(1.0, (at + 1) / config.warmup) * min(1.0, (total - at) / (0.2 * total))
            for group in opt.param_groups:
                group["lr"] = lr
            idx = np.sort(order[step * config.batch:(step + 1) * config.batch])
            x = torch.from_numpy(np.asarray(acts[idx], dtype=np.float32)) / scale
            dead = since_fired >= config.dead_tokens
            se, aux, index = sae(x, dead, k_aux)
            var = (x - x.mean(0)).pow(2).sum()
            loss = se / var + config.auxk_alpha * aux / var
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.drop_parallel_grad()
            opt.step()
            sae.unit_decoder()
            fired = torch.zeros(config.num_latents, dtype=torch.bool)
            fired[index.flatten()] = True
            since_fired += len(idx)
            since_fired[fired] = 0
            sums["se"] += float(se.detach())
            sums["var"] += float(var)
            sums["aux"] += float(aux.detach())
            if step % 100 == 0:
                log.info("epoch %d step %d/%d fvu %.3f dead %d (%.0f tokens/s)", epoch, step,
                         steps_per_epoch, float(se.detach() / var), int(dead.sum()),
                         (step + 1) * config.batch / (time.time() - t0))
        history.append({"epoch": epoch, "fvu": round(sums["se"] / sums["var"], 4),
                        "dead": int((since_fired >= config.dead_tokens).sum()),
                        "seconds": round(time.time() - t0, 1)})
        log.info("epoch %s", history[-1])
        torch.save({"sae": sae.state_dict(), "opt": opt.state_dict(), "since_fired": since_fired,
                    "history": history, "epoch": epoch}, checkpoint)
    return sae, scale, {"history": history, "tokens": n, "scale": scale}


def folded(sae: TopK, scale: float) -> dict[str, torch.Tensor]:
    """sparsify's tensors reading raw activations: the training scale folded into the biases.

    Trained on ``x / s``: ``z = TopK(ReLU(W (x/s - b) + c))``; on raw ``x`` the same latents
    times ``s`` are ``TopK(ReLU(W (x - s b) + s c))`` (TopK and ReLU commute with a positive
    scale), decoded by the same unit-norm ``W_dec`` plus ``s b``.
    """
    return {"encoder.weight": sae.encoder.weight.detach().clone(),
            "encoder.bias": sae.encoder.bias.detach() * scale,
            "W_dec": sae.W_dec.detach().clone(),
            "b_dec": sae.b_dec.detach() * scale}


def train(model: LoadedModel, config: TrainConfig, out: Path,
          layers: Sequence[int] | None = None) -> list[Path]:
    """Collect, then train every layer not yet saved under ``out`` (sparsify folders ``layers.N.mlp``).

    Returns the folders written or found.
    """
    from builder.dictionaries.formats import save_sparsify

    maps = collect(model, config)
    done: list[Path] = []
    for layer in layers or config.layers:
        folder = out / f"layers.{layer}.mlp"
        if (folder / "sae.safetensors").exists():
            done.append(folder)
            continue
        sae, scale, record = train_layer(maps[layer], config, work_dir(model, config) / f"L{layer}.ckpt")
        save_sparsify(folder, folded(sae, scale), k=config.k, transcode=False)
        (folder / "train.json").write_text(json.dumps(
            {**record, "config": asdict(config), "layer": layer, "model": model.name,
             "hook": config.hook.format(layer=layer)}, indent=1))
        done.append(folder)
        log.info("saved %s", folder)
    return done


def approx_megabytes(config: TrainConfig, d: int) -> float:
    """Size of the saved dictionary at float16, in MB (the 30 MB budget check)."""
    per_layer = 2 * config.num_latents * d + config.num_latents + d
    return len(config.layers) * per_layer * 2 / 1e6
