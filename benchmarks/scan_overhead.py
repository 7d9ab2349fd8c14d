"""What the whole-model scan costs beyond a plain forward pass of the same tokens.

Runs, on the same corpus windows and in the same process: (1) a plain forward through every
requested layer (the hooks capture the activations and drop them), (2) the scan (top-k windows,
traces and the sampled histogram of every neuron of every layer), nothing cached. Prints tokens/s
of each and the overhead of the scan.

    python benchmarks/scan_overhead.py                   # all 30 layers, 16,384 tokens
    python benchmarks/scan_overhead.py --tokens 65536 --layers 0-3
"""

from __future__ import annotations

import argparse
import time

from builder.config import ScanConfig
from builder.corpus import make_windows
from builder.forward import run_layers
from builder.models import load_model
from builder.stages.scan import scan
from n2g_mcp.cli.ranges import parse_range


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=16_384)
    parser.add_argument("--layers", default=None, help="e.g. 0-29 (default: every layer)")
    parser.add_argument("--top-k", type=int, default=50)
    args = parser.parse_args()

    model = load_model()
    layers = parse_range(args.layers) if args.layers else list(range(model.n_layers))
    config = ScanConfig(max_tokens=args.tokens, top_k=args.top_k)
    windows = make_windows(model, None, config.window, config.max_tokens)
    tokens = windows.size

    run_layers(model, windows[: config.batch_size].tolist(), layers)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(windows), config.batch_size):
        run_layers(model, windows[start:start + config.batch_size].tolist(), layers)
    plain = time.perf_counter() - started

    started = time.perf_counter()
    scan(model, windows, layers, config, progress=lambda *_: None, use_cache=False)
    scanned = time.perf_counter() - started

    print(f"{len(layers)} layers, {tokens:,} tokens, top {config.top_k} windows per neuron")
    print(f"plain forward : {tokens / plain:8,.0f} tokens/s ({plain:.1f} s)")
    print(f"scan          : {tokens / scanned:8,.0f} tokens/s ({scanned:.1f} s)")
    print(f"scan overhead : {100 * (scanned / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
