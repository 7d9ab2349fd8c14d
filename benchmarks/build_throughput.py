"""Build throughput against the limit: a graph's cost in tokens of a plain full-depth fp32 forward.

    python benchmarks/build_throughput.py [--model smollm2-135m] [--layers 0,15,29] [--neurons 32]
                                          [--scan-tokens 100000] [--device cpu] [--no-before]

One run prints, on the same machine and under the same load:

1. A plain forward's tokens/s: the whole model in float32, unembedding included (the unit every
   cost below is counted in), and to each layer in each numeric type built with.
2. Per layer and method, the builder's cost per neuron in plain tokens (seconds x plain
   tokens/s, the plain rate measured just before and after that method's build):
   - *stage work*: the recorded per-neuron seconds of prune, saliency and augmentation (the build
     record's ``per_neuron``), what the issue's 350-token target counts;
   - *all-in*: stage work, fit and evaluation, plus the layer's shared passes (token probe,
     calibration windows, and the traces of every neuron's top windows from a scan file) divided
     over the layer's neurons as a whole-layer build shares them; the trace pass is costed from
     the windows the scan file's top windows need, at the measured to-layer rate.
   - the F1 of the same neurons on both protocols (test top windows; with random negatives), in
     the method's own numeric regime (its own scan), and how far its firing tokens (>= 0.5 of
     max) on the test windows are float32's (shared / either, over windows both scans kept).
   The method as it was before issue 15 (float32, every prune length, every masked copy run
   whole) is built too, as an ablation row (``--no-before`` skips it), and the default in each
   other numeric type (bfloat16).

The scan (``--scan-tokens``, per numeric type) is cached and not timed; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from store.metrics import mean_defined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,15,29")
    parser.add_argument("--neurons", type=int, default=32)
    parser.add_argument("--scan-tokens", type=int, default=100_000,
                        help="corpus tokens scanned (deep layers scan slowly on a CPU)")
    parser.add_argument("--scan-file", default="stores/smollm2-135m.scan.npz",
                        help="a whole-model scan file, for the windows a layer's traces need")
    parser.add_argument("--before", action=argparse.BooleanOptionalAction, default=True,
                        help="also build with the method before issue 15 (an ablation row; default on)")
    parser.add_argument("--device")
    args = parser.parse_args()

    import torch

    from builder.config import DTYPES, BuildConfig, PruneConfig, ScanConfig
    from builder.corpus import make_windows
    from builder.forward import full_depth, run_layers
    from builder.models import load_model
    from builder.stages.build import fit_batch, measure_batch
    from builder.stages.calibration import calibration_windows, layer_probe
    from builder.stages.scan import scan
    from n2g_mcp.cli.ranges import sample
    from store.scanfile import ScanFile

    base = BuildConfig(scan=ScanConfig(max_tokens=args.scan_tokens))
    methods: dict[str, tuple[BuildConfig, bool]] = {}  # name: (config, prefix cache)
    if args.before:
        methods["before issue 15 (float32, every prune length, masked copies run whole)"] = (
            dataclasses.replace(base, dtype="float32",
                                prune=PruneConfig(growth=None, per_pass=8)), False)
    methods[f"default ({base.dtype}, length ladder, cached prefix)"] = (base, True)
    for dtype in DTYPES:  # the other numeric types, as ablation rows
        if dtype != base.dtype:
            methods[f"default in {dtype}"] = (dataclasses.replace(base, dtype=dtype), True)

    models = {dtype: load_model(args.model, device=args.device, dtype=dtype)
              for dtype in sorted({"float32"} | {c.dtype for c, _ in methods.values()})}
    fp32 = models["float32"]
    windows = make_windows(fp32, None, base.scan.window, base.scan.max_tokens)
    device = (torch.cuda.get_device_name() if fp32.device.startswith("cuda")
              else f"cpu x{torch.get_num_threads()}")
    neurons = sample(range(fp32.d_mlp), args.neurons)
    scan_file = ScanFile(Path(args.scan_file)) if Path(args.scan_file).is_file() else None
    probe_rows = windows[:16].tolist()

    def rate(model, layer: int | None) -> float:
        """Tokens/s of one pass over 16 windows: the whole model (layer None) or to the layer."""
        run_layers(model, probe_rows[:2], [layer or 0])  # warm the kernels for the shape
        times = []
        for _ in range(3):
            started = time.perf_counter()
            if layer is None:
                with full_depth():
                    run_layers(model, probe_rows, [model.n_layers - 1])
            else:
                run_layers(model, probe_rows, [layer])
            times.append(time.perf_counter() - started)
        return len(probe_rows) * (len(probe_rows[0]) + 1) / statistics.median(times)

    def timed(f, *a, **k):
        started = time.perf_counter()
        out = f(*a, **k)
        return out, time.perf_counter() - started

    plain_rates = [rate(fp32, None)]
    rows, rates = [], []
    for layer in (int(x) for x in args.layers.split(",")):
        scans = {dtype: scan(m, windows, [layer], base.scan)[layer] for dtype, m in models.items()}
        to_layer: dict[str, float] = {}
        rates.append((layer, to_layer))
        # The windows a whole-layer build's traces need (every neuron's top windows).
        needed = (len(np.unique(scan_file.top_window[layer, :base.scan.top_k])) if scan_file is not None
                  else len(np.unique(scans["float32"].windows)))
        for name, (config, cache) in methods.items():
            model = models[config.dtype]
            model.prefix_cache = cache
            layer_scan = scans[config.dtype]
            measure_batch(model, layer, neurons[:2], layer_scan, windows, config, None)  # warm-up
            # Rates move with the machine's load: each is taken just before and after the build,
            # and the trace pass is costed by the to-layer / plain ratio of the same moments.
            before, layer_before = rate(fp32, None), rate(model, layer)
            probe, probe_s = timed(layer_probe, model, layer, windows, config)
            calibration, calibration_s = timed(calibration_windows, model, layer, layer_scan,
                                               windows, config)
            measured, measure_s = timed(measure_batch, model, layer, neurons, layer_scan, windows,
                                        config, None, probe, calibration)
            graphs, fit_s = timed(fit_batch, model, layer, neurons, layer_scan, windows, config, measured)
            after, layer_after = rate(fp32, None), rate(model, layer)
            plain = (before + after) / 2
            plain_rates += [before, after]
            to_layer[config.dtype] = (layer_before + layer_after) / 2
            traces_s = needed * (base.scan.window + 1) / to_layer[config.dtype]
            shared_s = probe_s + calibration_s + traces_s
            stage = measured.cost["seconds"] * plain
            all_in = ((measure_s + fit_s) / len(neurons) + shared_s / model.d_mlp) * plain
            live = [g for g in graphs if g.fidelity is not None]
            f1 = mean_defined(g.fidelity.n2g.top.f1 for g in live)
            f1_random = mean_defined(g.fidelity.n2g.random.f1 for g in live)
            agree = _firing_agreement(scans["float32"], layer_scan, neurons, layer, base)
            rows.append((layer, name, plain, stage, all_in, measured.cost["tokens_forwarded"],
                         f1, f1_random, agree, len(live)))
            print(f"layer {layer} {name}: stage {stage:,.0f}, all-in {all_in:,.0f} plain tokens; "
                  f"F1 {f1:.3f}, with negatives {f1_random:.3f}", flush=True)

    print(f"\nmodel {fp32.name} on {device}; scan of {windows.size:,} corpus tokens per numeric type "
          f"(cached, not timed); {args.neurons} seeded neurons per layer\n")
    print(f"plain full-depth float32 forward: {statistics.median(plain_rates):,.0f} tokens/s "
          f"(median of {len(plain_rates)} measurements, {min(plain_rates):,.0f}-{max(plain_rates):,.0f})")
    for layer, to_layer in rates:
        print(f"to layer {layer}: " + ", ".join(f"{d} {r:,.0f} tokens/s" for d, r in to_layer.items()))
    print("\n| layer | method | plain tokens/s | stage work, plain tokens / neuron | all-in, plain "
          "tokens / neuron | tokens forwarded / neuron | F1 | F1 with negatives | firing tokens "
          "shared with float32 | neurons |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for layer, name, plain, stage, all_in, tokens, f1, f1_random, agree, n in rows:
        cells = " | ".join("-" if v is None else f"{v:.3f}" for v in (f1, f1_random))
        print(f"| {layer} | {name} | {plain:,.0f} | {stage:,.0f} | {all_in:,.0f} | {tokens:,.0f} | "
              f"{cells} | {agree:.2%} | {n} |")


def _firing_agreement(reference, layer_scan, neurons, layer: int, config) -> float:
    """Firing tokens (>= 0.5 of the neuron's max) of the test windows shared with float32's, over
    those firing in either (1.0: the same decisions), where both scans kept the same window."""
    from builder.stages.examples import split

    shared = either = 0
    for n in neurons:
        ref_max, max_ = float(reference.max_activation[n]), float(layer_scan.max_activation[n])
        if ref_max <= 0 or max_ <= 0:
            continue
        _, test = split(reference.values.shape[0], config.eval, config.seed, layer, n)
        for j in test:
            match = np.nonzero(layer_scan.windows[:, n] == reference.windows[j, n])[0]
            if not len(match):
                continue
            a = reference.traces[j, n] >= 0.5 * ref_max
            b = layer_scan.traces[match[0], n] >= 0.5 * max_
            shared, either = shared + int((a & b).sum()), either + int((a | b).sum())
    return shared / either if either else float("nan")


if __name__ == "__main__":
    main()
