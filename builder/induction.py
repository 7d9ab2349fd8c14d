"""A behavioural probe for induction-like neurons: which neurons fire more on a repeat?

In: a model, layers, and the probe's size. Out: every neuron's firing rate on the first and on
the second copy of random token sequences, ranked by how much more it fires on the second.

The probe: ``sequences`` random sequences of ``length`` ordinary tokens (lower-case words with a
leading space, so nothing about the tokens themselves predicts a repeat), each followed by an
exact copy. A token of the second copy can be predicted only by looking back at the first copy,
which is what induction circuits do; a neuron that fires on the second copy but not the first
reads that in-context signal. A token *fires* at >= 0.5 of the neuron's largest corpus activation
(from the scan; without one, of its largest activation in the probe itself).

One forward pass (all sequences, all requested layers at once) serves every neuron; the same
seed gives the same sequences and the same ranking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from builder.forward import run_layers
from builder.models import LoadedModel
from store.metrics import FIRING_THRESHOLD
from store.probes import InductionScore

_ORDINARY = re.compile(r"^ [a-z]{3,12}$")


def ordinary_tokens(model: LoadedModel) -> np.ndarray:
    """Ids of plain lower-case word tokens with a leading space (the probe's alphabet)."""
    ids = [i for i, text in enumerate(model.vocab)
           if i not in model.special_ids and _ORDINARY.match(text)]
    if len(ids) < 2:
        raise ValueError(f"{model.name} has too few plain word tokens for the induction probe")
    return np.asarray(ids, dtype=np.int64)


def repeated_sequences(model: LoadedModel, sequences: int, length: int, seed: int) -> np.ndarray:
    """``(sequences, 2 * length)`` token ids: random ordinary tokens, then the same again."""
    rng = np.random.default_rng(seed)
    first = rng.choice(ordinary_tokens(model), size=(sequences, length))
    return np.concatenate([first, first], axis=1)


def induction_scores(model: LoadedModel, layers: Sequence[int], sequences: int = 24,
                     length: int = 48, seed: int = 0,
                     max_activation: dict[int, np.ndarray] | None = None) -> list[InductionScore]:
    """Every neuron of ``layers`` scored on the repeated-sequence probe, best first.

    Args:
        model: the loaded model.
        layers: layers to probe (one pass stops inside the deepest).
        sequences, length: how many random sequences, of how many tokens each (before the copy).
        seed: picks the sequences.
        max_activation: per layer, ``(d_mlp,)`` each neuron's largest corpus activation (the
            firing threshold's base); missing layers use the probe's own maxima.
    """
    for layer in layers:
        model.check_layer(layer)
    rows = repeated_sequences(model, sequences, length, seed)
    acts = run_layers(model, rows.tolist(), sorted(set(layers)))
    results = []
    for layer in sorted(set(layers)):
        a = acts[layer].cpu().numpy()  # (sequences, 2 * length, d_mlp)
        base = (max_activation or {}).get(layer)
        if base is None:
            base = a.max(axis=(0, 1))
        base = np.where(base > 0, base, np.inf)  # a neuron that never fires never fires here
        firing = a >= FIRING_THRESHOLD * base  # (sequences, 2 * length, d_mlp)
        first = firing[:, :length].mean(axis=(0, 1))
        second = firing[:, length:].mean(axis=(0, 1))
        results += [InductionScore(layer, n, float(second[n] - first[n]), float(first[n]),
                                   float(second[n])) for n in range(a.shape[2])]
    # Ties (most neurons score 0) fall back to a fixed order, so a seed gives one ranking.
    return sorted(results, key=lambda r: (-r.score, -r.second, r.layer, r.neuron))
