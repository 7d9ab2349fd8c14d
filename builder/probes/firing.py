"""Which neurons fire at a token of a text: search by inference, across every layer at once.

In: a text, the position of the token to look at (default: the last), layers, and each neuron's
largest corpus activation (from the scan). Out: the neurons most active there, as activation /
the neuron's corpus max, so that neurons of different scales compare: 1.0 means "as strongly as
anywhere in the corpus". One forward pass, stopping inside the deepest requested layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from builder.forward import run_layers
from builder.models import LoadedModel
from store.errors import BadArgument
from store.probes import FiringHit


def neurons_at(model: LoadedModel, ids: Sequence[int], position: int, layers: Sequence[int],
               max_activation: dict[int, np.ndarray], limit: int = 20) -> list[FiringHit]:
    """The ``limit`` neurons with the highest normalised activation at ``ids[position]``.

    Args:
        model: the loaded model.
        ids: the text's token ids (BOS is added by the forward pass).
        position: index into ``ids`` (negative counts from the end).
        layers: layers to search.
        max_activation: per layer, ``(d_mlp,)`` each neuron's largest corpus activation; a
            neuron whose max is not positive (dead in the corpus) is never listed.
        limit: how many hits.

    Raises:
        BadArgument: for a position outside the text.
    """
    if not -len(ids) <= position < len(ids):
        raise BadArgument(f"position {position} is outside the text's {len(ids)} tokens")
    # Only the prefix up to the token matters in a causal model.
    prefix = list(ids[: position % len(ids) + 1])
    acts = run_layers(model, [prefix], sorted(set(layers)))
    rows = []
    for layer in sorted(set(layers)):
        a = acts[layer][0, -1].cpu().numpy()  # (d_mlp,)
        base = max_activation[layer]
        norm = np.where(base > 0, a / np.where(base > 0, base, 1), -np.inf)
        rows += [(float(norm[n]), layer, n, float(a[n])) for n in np.argsort(-norm)[:limit]
                 if np.isfinite(norm[n])]  # a dead unit is never listed, even where a layer has few
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [FiringHit(layer=layer, neuron=n, activation=norm, raw_activation=act)
            for norm, layer, n, act in rows[:limit]]
