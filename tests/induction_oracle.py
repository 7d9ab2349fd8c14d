"""A two-layer rule-defined model with a planted induction neuron and a model that uses it.

Tokens are 400 plain three-letter words (" aaa", " aab", ...) plus BOS. Neurons (``d_mlp = 6`` per layer):

- layer 1, neuron ``INDUCT`` (3): fires 1.0 on a token that already appeared earlier in the
  text: on the second copy of a repeated sequence it fires everywhere, on random text rarely.
- layer 0, neuron ``EVEN`` (1): fires 0.9 on even-numbered words, wherever they stand.
- every other neuron: a fixed random function of the token alone (no context).

The logits read the (possibly ablated) ``INDUCT`` activation: where it is above 0.5, the model
predicts the token that followed the token's previous occurrence (logit +12); elsewhere every
token is equally likely. Zeroing ``INDUCT`` therefore raises the loss on a repeated copy from
near 0 to log(vocabulary), and zeroing any other neuron changes nothing.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from builder.models import LoadedModel

INDUCT_LAYER, INDUCT = 1, 3
EVEN = 1
D_MLP = 6
WORDS = tuple(" " + "".join(letters) for letters in itertools.product("abcdefghij", repeat=3))[:400]
BOS = "<bos>"


class _Tokenizer:
    unk_token = BOS
    unk_token_id = 0
    pad_token_id = None
    eos_token_id = None
    bos_token_id = 0

    def __init__(self) -> None:
        self.vocab = [BOS, *WORDS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.all_special_ids = [0]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self.index.get(" " + w, 0) for w in text.split()]}  # unknown words: 0

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.index.get(tokens, 0)
        return [self.index.get(t, 0) for t in tokens]


class InductionBridge:
    """Mimics the TransformerBridge calls the builder makes (hooks may edit activations)."""

    def __init__(self) -> None:
        self.hook_dict = {f"blocks.{layer}.mlp.hook_post": None for layer in range(2)}
        gen = torch.Generator().manual_seed(0)
        self.noise = torch.rand(len(WORDS) + 1, 2, D_MLP, generator=gen)  # (vocab, layer, d_mlp)
        self.W_E = torch.randn(len(WORDS) + 1, 4, generator=gen)

    def _layer(self, ids: torch.Tensor, layer: int) -> torch.Tensor:
        acts = self.noise[ids, layer].clone()  # (batch, pos, d_mlp)
        if layer == 0:
            acts[..., EVEN] = torch.where((ids > 0) & ((ids - 1) % 2 == 0), 0.9, 0.0)
        else:
            seen = torch.zeros_like(ids, dtype=torch.bool)
            for p in range(1, ids.shape[1]):
                seen[:, p] = (ids[:, 1:p] == ids[:, p:p + 1]).any(dim=1)
            acts[..., INDUCT] = seen.float()
        return acts

    def run_with_hooks(self, ids: torch.Tensor, fwd_hooks=(), stop_at_layer: int | None = None,
                       **_) -> torch.Tensor:
        hooks = dict(fwd_hooks)
        induct = None
        for layer in range(2 if stop_at_layer is None else min(2, stop_at_layer)):
            acts = self._layer(ids, layer)
            name = f"blocks.{layer}.mlp.hook_post"
            if name in hooks:
                edited = hooks[name](acts, name)
                acts = acts if edited is None else edited
            if layer == INDUCT_LAYER:
                induct = acts[..., INDUCT]
        return self._logits(ids, induct)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.run_with_hooks(ids)

    def _logits(self, ids: torch.Tensor, induct: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, len(WORDS) + 1)  # (batch, pos, vocab)
        if induct is None:
            return logits
        for b in range(ids.shape[0]):
            last: dict[int, int] = {}
            row = ids[b].tolist()
            for p, token in enumerate(row):
                if p > 0 and induct[b, p] > 0.5 and token in last and last[token] + 1 < len(row):
                    logits[b, p, row[last[token] + 1]] = 12.0
                if p > 0:
                    last[token] = p
        return logits


def induction_model() -> LoadedModel:
    """The induction oracle as the builder sees a loaded model."""
    tok = _Tokenizer()
    return LoadedModel(
        name="induction-oracle", bridge=InductionBridge(), tokenizer=tok,
        hook_template="blocks.{layer}.mlp.hook_post", n_layers=2, d_mlp=D_MLP, bos_id=0,
        mask_id=0, vocab=list(tok.vocab), special_ids=frozenset({0}), device="cpu",
    )


PROBE_CALLS = {
    "find_neurons": {"text": "abd abc aaa abd", "limit": 3},
    "find_induction_neurons": {"sequences": 4, "length": 12, "limit": 5},
    "ablate_neurons": {"neurons": [f"L{INDUCT_LAYER}/N{INDUCT}"], "each": True},
    "steer_neurons": {"neurons": [f"L{INDUCT_LAYER}/N{INDUCT}"], "prompt": "aaa abb aac aaa", "scale": 0.0,
                      "max_new_tokens": 4},
    "test_hypothesis": {"layer": 0, "neuron": EVEN, "pattern": r" [a-j]{2}[acegi]\b"},
    "score_explanation": {"layer": 0, "neuron": EVEN, "seed": 1},
}
"""One successful call of every whole-model probe tool, over the oracle and its scan file, and of
score_explanation, which needs the same (a scan file and a forward pass)."""


def write_oracle_scan(stores: Path) -> Path:
    """Scan 40 random windows of the oracle through both layers; write its scan file in ``stores``."""
    from builder.config import ScanConfig
    from builder.stages.scan import export_scan_file, scan
    from store.scanfile import scan_filename

    model = induction_model()
    windows = np.random.default_rng(0).integers(1, len(model.vocab), size=(40, 16)).astype(np.int32)
    config = ScanConfig(window=16, top_k=6, random_windows=4, batch_size=8, sample_stride=1)
    scans = scan(model, windows, [0, 1], config, use_cache=False)
    return export_scan_file(model, windows, scans, stores / scan_filename(model.name), config)


def oracle_backend():
    """The real live layer serving the oracle: ``(backend, served models)`` for a server."""
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.registry import ServedModels

    models = LiveModels()
    spec = models.add(induction_model())
    backend = BuilderBackend(models=models)
    return backend, ServedModels(default=spec, embedded=False)
