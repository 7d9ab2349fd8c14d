"""``n2g dictionary``: train the embedded TopK dictionary, and measure a dictionary's quality.

    n2g dictionary train                      # smollm2-135m -> dictionaries/smollm2-135m/mlp-3k/
    n2g dictionary train --layers 7,15 --latents 2048 --epochs 2
    n2g dictionary scan dictionaries/smollm2-135m/mlp-3k    # -> stores/smollm2-135m.mlp-3k.scan.npz
    n2g dictionary quality dictionaries/smollm2-135m/mlp-3k

``train`` is resumable: activations, per-epoch checkpoints and finished layers are kept (see
``builder/dictionaries/train.py``); run it again to go on. ``scan`` writes the
dictionary's scan file as ``n2g scan --dictionary`` does, reading the build split's windows from
the training activations instead of running the model again (``builder/dictionaries/cached.py``).
``quality`` writes ``quality.json``
beside the dictionary (FVU, L0, dead latents, next-token loss spliced against clean), on the
held-out documents. Torch is imported only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from store.models import DEFAULT_MODEL


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from builder.dictionaries.train import TrainConfig, approx_megabytes, train
    from builder.models import load_model

    config = TrainConfig()
    if args.layers:
        config = replace(config, layers=tuple(int(x) for x in args.layers.split(",")))
    if args.latents:
        config = replace(config, num_latents=args.latents)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    model = load_model(args.model, device=args.device)
    out = Path(args.out) if args.out else (Path("dictionaries") / model.name
                                           / f"mlp-{config.num_latents // 1024}k")
    print(f"training {len(config.layers)} layers x {config.num_latents} latents "
          f"(~{approx_megabytes(config, int(model.bridge.cfg.d_model)):.1f} MB at float16) into {out}")
    for folder in train(model, config, out):
        print(f"  {folder}")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    import time

    from builder.config import ScanConfig
    from builder.corpus import make_windows
    from builder.dictionaries.cached import cached_view
    from builder.dictionaries.formats import read_folder
    from builder.dictionaries.train import TrainConfig
    from builder.models import load_model
    from builder.stages.scan import export_scan_file, scan
    from store.scanfile import scan_filename

    folder = Path(args.folder)
    model = load_model(args.model, device=args.device)
    model = model.with_units(read_folder(folder, args.name or folder.name, model.name))
    config = ScanConfig()
    trained = TrainConfig(layers=tuple(sorted(model.units.layers)))
    view = cached_view(model, trained)
    windows = make_windows(model, None, config.window, config.max_tokens)
    started = time.perf_counter()
    scans = scan(view, windows, sorted(model.units.layers), config)
    out = Path(args.out) if args.out else Path(args.stores_dir) / scan_filename(model.key)
    export_scan_file(model, windows, scans, out, config)
    bridge = view.bridge
    print(f"scanned {windows.size:,} tokens in {time.perf_counter() - started:.0f} s ({bridge.served} passes "
          f"from the training activations, {bridge.missed} run on the model); wrote {out}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from builder.dictionaries.quality import write_quality

    for line in write_quality(Path(args.folder), args.model, args.max_tokens):
        print(line)
    return 0


def add_dictionary_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``dictionary train`` and ``dictionary quality`` to a parser."""
    s = sub.add_parser("dictionary", help="train the embedded TopK dictionary; measure a dictionary")
    inner = s.add_subparsers(dest="dictionary_command", required=True)
    t = inner.add_parser("train", help="train TopK SAEs on the build split (resumable)")
    t.add_argument("--model", default=DEFAULT_MODEL)
    t.add_argument("--layers", help="comma-separated layers (default 7,15,19,25)")
    t.add_argument("--latents", type=int, help="latents a layer (default 3072)")
    t.add_argument("--epochs", type=int, help="passes over the build split (default 3)")
    t.add_argument("--out", help="folder of sparsify hookpoint folders (default dictionaries/<model>/mlp-<n>k)")
    t.add_argument("--device")
    t.set_defaults(func=cmd_train)
    c = inner.add_parser("scan", help="scan a trained dictionary's latents over the corpus, reading the "
                         "build split's windows from the training activations (the held-out ones run the model)")
    c.add_argument("folder")
    c.add_argument("--name", help="the dictionary's name (default: the folder's)")
    c.add_argument("--model", default=DEFAULT_MODEL)
    c.add_argument("--out", help="the scan file (default: stores/<model>.<name>.scan.npz)")
    c.add_argument("--device")
    c.set_defaults(func=cmd_scan, stores_dir=stores_dir)
    q = inner.add_parser("quality", help="FVU, L0, dead latents and spliced loss on held-out text")
    q.add_argument("folder")
    q.add_argument("--model", default=DEFAULT_MODEL)
    q.add_argument("--max-tokens", type=int, default=40_000)
    q.set_defaults(func=cmd_quality)
    return s
