"""Build throughput: neurons per second and tokens forwarded per neuron, for two layers.

    python benchmarks/build_throughput.py [--model smollm2-135m] [--layers 0,15] [--neurons 64]
                                          [--scan-tokens 100000] [--device cpu]

For each layer it times the activation scan (tokens/s) and the N2G stages for ``--neurons``
neurons (prune, saliency, augment, fit, evaluate; nothing is written), and prints one table.
The reference N2G script ran at 0.051 layer-0 neurons/s beside a bridge of this model on the
same 2-core CPU (DESIGN-NOTES section 3); the last column is the speed-up over that figure.
"""

from __future__ import annotations

import argparse
import time

REFERENCE_NEURONS_PER_S = 0.051


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,15")
    parser.add_argument("--neurons", type=int, default=64)
    parser.add_argument("--scan-tokens", type=int, default=100_000,
                        help="corpus tokens scanned (deep layers scan slowly on a CPU)")
    parser.add_argument("--device")
    args = parser.parse_args()

    import torch

    from builder.build import build_layer
    from builder.config import BuildConfig, ScanConfig
    from builder.corpus import make_windows
    from builder.models import load_model
    from builder.scan import scan

    config = BuildConfig(scan=ScanConfig(max_tokens=args.scan_tokens))
    model = load_model(args.model, device=args.device)
    windows = make_windows(model, None, config.scan.window, config.scan.max_tokens)
    device = torch.cuda.get_device_name() if model.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    rows = []
    for layer in (int(x) for x in args.layers.split(",")):
        started, before = time.perf_counter(), model.tokens_forwarded
        layer_scan = scan(model, windows, [layer], config.scan, use_cache=False)[layer]
        scan_s = time.perf_counter() - started
        scan_tokens = model.tokens_forwarded - before
        started, before = time.perf_counter(), model.tokens_forwarded
        graphs = build_layer(model, layer, list(range(args.neurons)), layer_scan, windows, config)
        build_s = time.perf_counter() - started
        per_neuron = (model.tokens_forwarded - before) / len(graphs)
        rows.append((layer, scan_tokens / scan_s, len(graphs) / build_s, per_neuron,
                     len(graphs) / build_s / REFERENCE_NEURONS_PER_S))
    print(f"\nmodel {model.name} on {device}; scan of {windows.size:,} corpus tokens; "
          f"{args.neurons} neurons per layer\n")
    print("| layer | scan tokens/s | N2G neurons/s | tokens forwarded per neuron | x reference |")
    print("| --- | --- | --- | --- | --- |")
    for layer, scan_rate, rate, per_neuron, speedup in rows:
        print(f"| {layer} | {scan_rate:,.0f} | {rate:.2f} | {per_neuron:,.0f} | {speedup:,.0f}x |")


if __name__ == "__main__":
    main()
