"""Build throughput: neurons per second and tokens forwarded per neuron, against a naive loop.

    python benchmarks/build_throughput.py [--model smollm2-135m] [--layers 0,15,29] [--neurons 32]
                                          [--naive 2] [--scan-tokens 100000] [--device cpu]

For each layer it builds ``--neurons`` seeded-sampled neurons with the default method (prune,
saliency, augment, fit, evaluate; nothing is written; the scan is cached and not timed), then the
first ``--naive`` of the same neurons with the same method in the reference script's shape: one
neuron at a time, every forward pass through the whole model (unembedding included). It prints
one table with both rates and their ratio, measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,15,29")
    parser.add_argument("--neurons", type=int, default=32)
    parser.add_argument("--naive", type=int, default=2, help="neurons built by the naive loop")
    parser.add_argument("--scan-tokens", type=int, default=100_000,
                        help="corpus tokens scanned (deep layers scan slowly on a CPU)")
    parser.add_argument("--device")
    args = parser.parse_args()

    import torch

    from builder.build import build_layer
    from builder.config import BuildConfig, ScanConfig
    from builder.corpus import make_windows
    from builder.forward import full_depth
    from builder.models import load_model
    from builder.scan import scan
    from n2g_mcp.cli.ranges import sample

    config = BuildConfig(scan=ScanConfig(max_tokens=args.scan_tokens))
    model = load_model(args.model, device=args.device)
    windows = make_windows(model, None, config.scan.window, config.scan.max_tokens)
    device = torch.cuda.get_device_name() if model.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    neurons = sample(range(model.d_mlp), args.neurons)

    def timed(layer: int, chosen: list[int], cfg: BuildConfig) -> tuple[float, float]:
        started, before = time.perf_counter(), model.tokens_forwarded
        build_layer(model, layer, chosen, layer_scan, windows, cfg)
        seconds = time.perf_counter() - started
        return len(chosen) / seconds, (model.tokens_forwarded - before) / len(chosen)

    rows = []
    for layer in (int(x) for x in args.layers.split(",")):
        layer_scan = scan(model, windows, [layer], config.scan)[layer]
        rate, tokens = timed(layer, neurons, config)
        with full_depth():
            naive_rate, naive_tokens = timed(layer, neurons[:args.naive],
                                             dataclasses.replace(config, neuron_batch=1))
        rows.append((layer, rate, tokens, naive_rate, naive_tokens))
    print(f"\nmodel {model.name} on {device}; scan of {windows.size:,} corpus tokens (cached, not "
          f"timed); {args.neurons} neurons per layer, the first {args.naive} also by the naive loop\n")
    print("| layer | neurons/s | tokens forwarded per neuron | naive loop neurons/s | "
          "naive tokens per neuron | x naive |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layer, rate, tokens, naive_rate, naive_tokens in rows:
        print(f"| {layer} | {rate:.2f} | {tokens:,.0f} | {naive_rate:.3f} | {naive_tokens:,.0f} | "
              f"{rate / naive_rate:.1f}x |")


if __name__ == "__main__":
    main()
