"""Ablations: each N2G stage and choice switched off or swapped, on a sample of neurons.

    python benchmarks/ablations.py [--layers 0,15] [--neurons 64,12] [--scan-tokens 0,200000]

For each layer, a seeded sample of neurons is built once per variant (nothing is stored) from the
same scan and the same train/test splits (variants that differ only in how the graph is fitted
reuse one run of prune, saliency and augmentation; each row still reports a whole build's cost), and one markdown table row is printed per variant:
N2G's precision, recall and F1 on the paper's protocol (test top examples), F1 and correlation
with random negatives added, the token lookup's F1 on the same splits (it is trained on the
variant's train windows, so it moves with them), the graphs flagged unexplained (no firing
predicted on their own train windows), and the cost in tokens forwarded and seconds per neuron
(the token probe's share counted as in a 128-neuron build, ``PROBE_SHARE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from builder.config import BuildConfig, PruneConfig, ScanConfig
from store.metrics import mean_defined

PROBE_SHARE = 128
"""The token probe's tokens are charged to a variant's row as a 128-neuron layer build would
share them (the shipped store's sample a deep layer; layers 0-1 are built whole, 1,536)."""


def variants(base: BuildConfig) -> dict[str, BuildConfig]:
    """The configurations compared; ``default`` is what ``n2g build`` uses."""
    replace = dataclasses.replace
    uncalibrated = replace(base.fit, calibrate=False, backoff=False, token_paths=False)
    # The method before issue 8: every firing token of the paper's 10 train windows, no cap, the
    # pruned text's activation as END, no calibration, saliency of every token, pivots substituted,
    # folded matching.
    before = replace(base, examples=replace(base.examples, windows=None, max_pivots=None),
                     saliency=replace(base.saliency, context=None),
                     augment=replace(base.augment, helper="embedding", pivot=True),
                     fit=replace(uncalibrated, scale=False, normalized=True),
                     eval=replace(base.eval, extra_train=0))
    return {
        "default (see the stages table)": base,
        "paper's method (argmax pivots, context augmentation, exact, 10 train windows)": replace(
            BuildConfig.paper(), scan=base.scan),
        "before issue 8 (all firing pivots, pivot augmentation, pruned-text END, 10 train windows)": before,
        "before issue 8 + scaled ENDs": replace(before, fit=replace(before.fit, scale=True)),
        "no calibration (scaled ENDs)": replace(base, fit=uncalibrated),
        "calibration without backoff": replace(base, fit=replace(base.fit, backoff=False)),
        "calibration without token paths": replace(base, fit=replace(base.fit, token_paths=False)),
        "calibration without backoff or token paths": replace(
            base, fit=replace(base.fit, backoff=False, token_paths=False)),
        "calibrated paths predict firing at share >= 0.3 (default 0.2)": replace(
            base, fit=replace(base.fit, firing_share=0.3)),
        "calibrated paths predict firing at share >= 0.5 (default 0.2)": replace(
            base, fit=replace(base.fit, firing_share=0.5)),
        "10 train windows (the paper's; default 40)": replace(base, eval=replace(base.eval, extra_train=0)),
        "token probe in every layer (default: layers 0-1)": replace(
            base, fit=replace(base.fit, probe_layers=10**6)),
        "no token probe": replace(base, fit=replace(base.fit, probe_layers=0)),
        "pivots from all 40 train windows (default: the first 10)": replace(
            base, examples=replace(base.examples, windows=None)),
        "pivots capped at 16 (default 8)": replace(base, examples=replace(base.examples, max_pivots=16)),
        "pivots from all 40 train windows, capped at 32 (default: the first 10, 8)": replace(
            base, examples=replace(base.examples, windows=None, max_pivots=32)),
        "saliency of every token (default: the 8 before the pivot)": replace(
            base, saliency=replace(base.saliency, context=None)),
        "context augmentation by embedding neighbours (default: none)": replace(
            base, augment=replace(base.augment, helper="embedding")),
        "context and pivot augmentation (new pivots pruned and measured again)": replace(
            base, augment=replace(base.augment, helper="embedding", pivot=True)),
        "context augmentation by the model's own predictions": replace(
            base, augment=replace(base.augment, helper="model")),
        "no pruning": replace(base, prune=PruneConfig(enabled=False)),
        "pruning tries every length (default: 1-8, then x1.25 a step)": replace(
            base, prune=replace(base.prune, growth=None, per_pass=8)),
        "float32 (default: bfloat16; its own scan)": replace(base, dtype="float32"),
        "matching: case- and space-folded (default: exact)": replace(
            base, fit=replace(base.fit, normalized=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,15")
    parser.add_argument("--neurons", default="64,12", help="sample size per layer")
    parser.add_argument("--scan-tokens", default="0,100000", help="corpus tokens scanned per layer (0: all)")
    parser.add_argument("--only", help="comma-separated substrings of variant names to run")
    args = parser.parse_args()

    from builder.corpus import make_windows
    from builder.models import load_model
    from builder.stages.augment import make_helper
    from builder.stages.build import fit_batch, measure_batch
    from builder.stages.calibration import layer_probe
    from builder.stages.scan import scan
    from n2g_mcp.cli.ranges import sample

    models = {}  # one per numeric type asked for, each with its own scans

    def model_in(dtype: str):
        if dtype not in models:
            models[dtype] = load_model(args.model, dtype=dtype)
        return models[dtype]

    model = model_in(BuildConfig().dtype)
    layers = [int(x) for x in args.layers.split(",")]
    sizes = [int(x) for x in args.neurons.split(",")]
    budgets = [int(x) or None for x in args.scan_tokens.split(",")]
    print("| layer | variant | neurons | P | R | F1 | F1 with negatives | r | token lookup F1 | "
          "token lookup F1 with negatives | unexplained | tokens / neuron | s / neuron |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for layer, size, budget in zip(layers, sizes, budgets, strict=True):
        base = BuildConfig(scan=ScanConfig(max_tokens=budget))
        windows = make_windows(model, None, base.scan.window, budget)
        scans = {}
        neurons = sample(range(model.d_mlp), size)
        measured = {}  # variants that differ only in fit settings share the model-facing stages
        for name, config in variants(base).items():
            if args.only and not any(part in name for part in args.only.split(",")):
                continue
            model = model_in(config.dtype)
            if config.dtype not in scans:
                scans[config.dtype] = scan(model, windows, [layer], base.scan)[layer]
            layer_scan = scans[config.dtype]
            probed = config.fit.calibrate and layer < config.fit.probe_layers
            key = (config.dtype, config.examples, config.prune, config.saliency, config.augment, config.eval.top,
                   config.eval.train, config.fit.negatives if config.fit.calibrate else 0, probed)
            started = time.perf_counter()
            if key not in measured:
                helper = make_helper(config.augment.helper, model, config.max_batch_tokens)
                before = model.tokens_forwarded
                probe = layer_probe(model, layer, windows, config)
                # The probe serves every neuron of a layer: charge a 128-neuron build's share.
                probe_cost = (model.tokens_forwarded - before) / max(PROBE_SHARE, len(neurons))
                measured[key] = (measure_batch(model, layer, neurons, layer_scan, windows, config,
                                               helper, probe), probe_cost)
            batch, probe_cost = measured[key]
            graphs = [g for g in fit_batch(model, layer, neurons, layer_scan, windows, config,
                                           batch) if g.fidelity is not None]
            # Cost of the whole build: the shared stages' own cost plus this variant's fit.
            seconds = batch.cost["seconds"] + (time.perf_counter() - started) / len(neurons)
            tokens = batch.cost["tokens_forwarded"] + probe_cost
            top = [g.fidelity.n2g.top for g in graphs]
            rnd = [g.fidelity.n2g.random for g in graphs]
            cells = [mean_defined(s.precision for s in top), mean_defined(s.recall for s in top),
                     mean_defined(s.f1 for s in top), mean_defined(s.f1 for s in rnd),
                     mean_defined(s.correlation for s in rnd),
                     mean_defined(g.fidelity.token_lookup.top.f1 for g in graphs),
                     mean_defined(g.fidelity.token_lookup.random.f1 for g in graphs)]
            text = " | ".join("-" if v is None else f"{v:.2f}" for v in cells)
            unexplained = sum(g.unexplained for g in graphs)
            print(f"| {layer} | {name} | {len(graphs)} | {text} | {unexplained} | {tokens:,.0f} | "
                  f"{seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
