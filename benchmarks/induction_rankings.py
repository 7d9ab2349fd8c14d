"""Which statistic should rank induction-like neurons? Each ranking's top 20, zeroed (issue 14).

    python benchmarks/induction_rankings.py [--top 20] [--seed 10]

One pass of the induction probe (``builder.probes.induction``: 16 x 40 random token ids per
seed, seeds 0-2, each sequence repeated) over every layer gives each neuron's per-copy moments; from them,
side by side: the rise (the probe's score), Cohen's d, d of the clipped activations, the
firing-rate difference, Cohen's h of the firing rates, and the unclipped mean difference. For
each ranking's top ``--top``: the second-copy loss rise when they are zeroed on fresh sequences
(``--seed``) against as many random neurons of the same layers (``builder.probes.ablate``); the
*graph ceiling*, the mean F1 on repeated text a graph could reach if it predicted firing on every
repeated token wherever at least ``FitConfig.firing_share`` of them fire (2s / (1 + s) for a
second-copy firing rate s, else 0); and how many of the plain mean-difference ranking's top 50
its top 100 holds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from builder.config import FitConfig
from store.metrics import FIRING_THRESHOLD

STORES = Path(__file__).resolve().parent.parent / "stores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10, help="seed of the fresh ablation sequences")
    args = parser.parse_args()

    from builder.forward import layers_and_losses
    from builder.models import load_model
    from builder.probes.ablate import ablate
    from builder.probes.induction import (
        LENGTH,
        SEEDS,
        SEQUENCES,
        Moments,
        copy_positions,
        repeated_sequences,
        rise,
        standardised_difference,
    )
    from store.scanfile import ScanFile, scan_filename

    model = load_model("smollm2-135m")
    scan = ScanFile(STORES / scan_filename(model.name))
    layers = list(range(model.n_layers))
    first_at, second_at = copy_positions(LENGTH)
    plain = {layer: (Moments(model.d_mlp), Moments(model.d_mlp)) for layer in layers}
    clipped = {layer: (Moments(model.d_mlp), Moments(model.d_mlp)) for layer in layers}
    threshold = np.full(model.d_mlp, FIRING_THRESHOLD)
    for seed in SEEDS:
        rows = repeated_sequences(model, SEQUENCES, LENGTH, seed)
        acts, _ = layers_and_losses(model, rows.tolist(), layers)
        for layer in layers:
            top = scan.max_activation[layer]
            a = acts.pop(layer).cpu().numpy() / np.where(top > 0, top, np.inf)
            for moments, values in ((plain[layer], a), (clipped[layer], np.clip(a, 0.0, 1.0))):
                moments[0].add(values[:, first_at], threshold)
                moments[1].add(values[:, second_at], threshold)

    stats: dict[str, np.ndarray] = {}
    for name, fn in {
        "rise (the probe's score)": lambda layer: rise(*plain[layer]),
        "Cohen's d": lambda layer: standardised_difference(*plain[layer]),
        "Cohen's d of the clipped activations": lambda layer: standardised_difference(*clipped[layer]),
        "firing-rate difference": lambda layer: _rates(plain[layer])[1] - _rates(plain[layer])[0],
        "Cohen's h of the firing rates": lambda layer: _h(*_rates(plain[layer])),
        "mean difference / corpus max": lambda layer: plain[layer][1].mean() - plain[layer][0].mean(),
    }.items():
        stats[name] = np.stack([fn(layer) for layer in layers])  # (layers, d_mlp)
    second = np.stack([_rates(plain[layer])[1] for layer in layers])
    reference = _top(stats["mean difference / corpus max"], 50)

    share = FitConfig().firing_share
    print(f"| ranking (top {args.top}) | zeroed, seed {args.seed} | control | graph ceiling | "
          "of the mean-difference top 50 in its top 100 |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    for name, values in stats.items():
        chosen = _top(values, args.top)
        s = np.array([second[layer, n] for layer, n in chosen])
        ceiling = float(np.where(s >= share, 2 * s / (1 + s), 0.0).mean())
        result = ablate(model, chosen, seed=args.seed)
        overlap = len(set(reference) & set(_top(values, 100)))
        print(f"| {name} | {result.delta:+.3f} | {result.control_delta:+.3f} | {ceiling:.2f} | {overlap} |",
              flush=True)


def _rates(moments: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Firing rates on the first and the second copy (``builder.probes.induction.Moments``)."""
    first, second = moments
    return first.firing / first.n, second.firing / second.n


def _h(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cohen's h: the difference of the arcsine-transformed proportions."""
    return 2 * np.arcsin(np.sqrt(second)) - 2 * np.arcsin(np.sqrt(first))


def _top(values: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``(layer, neuron)`` of the ``count`` largest values, largest first."""
    order = np.argsort(-values, axis=None, kind="stable")[:count]
    return [(int(layer), int(n)) for layer, n in zip(*np.unravel_index(order, values.shape), strict=True)]


if __name__ == "__main__":
    main()
