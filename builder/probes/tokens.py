"""Token probe: every neuron of a layer on every corpus token standing alone, in a few passes.

In: a model, a layer, token ids. Out: a :class:`TokenProbe`, the activation of every neuron of
the layer on each token right after the BOS token (``(tokens, d_mlp)``). Rows are two tokens long,
so the whole vocabulary of a corpus costs about two forward tokens per distinct token, for all
neurons of the layer at once.

Why: a graph can only name activating tokens it has seen, and in SmolLM2's first layers 40% of the
firings on a neuron's test windows are on tokens that never fire in its train windows. Early
neurons respond mostly to the token itself, so its activation alone is evidence for a
context-free path that the train windows never show (see ``FitConfig.probe_layers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from builder.forward import run_layers
from builder.models import LoadedModel


@dataclass(frozen=True)
class TokenProbe:
    """The activations of one layer's neurons on tokens standing alone."""

    tokens: np.ndarray
    """``(t,)`` token ids."""
    activations: np.ndarray
    """``(t, d_mlp)`` float16 activation of every neuron on each token after BOS."""

    def firing(self, neuron: int, max_activation: float, threshold: float) -> list[tuple[int, float]]:
        """``(token id, normalised activation)`` of the tokens on which the neuron fires alone."""
        acts = self.activations[:, neuron].astype(np.float32) / max_activation  # (t,)
        hits = np.flatnonzero(acts >= threshold)
        return [(int(self.tokens[i]), float(acts[i])) for i in hits]


def probe_tokens(model: LoadedModel, layer: int, tokens: Sequence[int],
                 batch: int = 2048) -> TokenProbe:
    """Activations of every neuron of ``layer`` on each token alone (after BOS)."""
    ids = np.asarray(sorted(set(int(t) for t in tokens) - set(model.special_ids)), dtype=np.int64)
    out = np.zeros((len(ids), model.d_mlp), dtype=np.float16)
    for start in range(0, len(ids), batch):
        rows = [[int(t)] for t in ids[start:start + batch]]
        acts = run_layers(model, rows, [layer])[layer]  # (batch, 1, d_mlp)
        out[start:start + len(rows)] = acts[:, 0].cpu().numpy().astype(np.float16)
    return TokenProbe(ids, out)
