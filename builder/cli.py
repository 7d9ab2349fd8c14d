"""``n2g build`` and ``n2g scan``: the builder's command line, which ``n2g_mcp/cli.py`` dispatches to.

    n2g build --model smollm2-135m --layers 0 --neurons 0-63
    n2g build --layers 0-1 --store stores/smollm2-135m.jsonl --sample 32
    n2g scan                      # every layer's top windows and statistics -> stores/<model>.scan.npz

:func:`add_build_command` and :func:`add_scan_command` add the sub-commands to a parser; their
functions load the model and run ``builder.build.build`` or ``builder.scan.scan``. The build
model and runs ``builder.build.build``. Importing this module imports no torch (the command
imports the builder's stages when it runs), so ``n2g eval`` stays light. Layer and neuron ranges
are checked with ``store.names.check_range`` before any model loads.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from store.catalog import store_filename
from store.jsonl import check_not_locked
from store.models import DEFAULT_HOOK, DEFAULT_MODEL, model_shape
from store.names import OutOfRange, check_range
from store.scanfile import scan_filename


class UsageError(Exception):
    """A bad argument, reported in one line."""


def parse_range(text: str, upper: int | None = None) -> list[int]:
    """Parse ``"0-63"``, ``"1,5,9-11"`` or ``"all"`` (needs ``upper``) into sorted indices.

    >>> parse_range("1,5,9-11")
    [1, 5, 9, 10, 11]
    """
    if text.strip().lower() == "all":
        if upper is None:
            raise UsageError("'all' needs a model whose size is known")
        return list(range(upper))
    values: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError
            values.update(range(first, last + 1))
    except ValueError:
        raise UsageError(f"bad range {text!r}: use forms like 0-63, 1,5,9-11 or all") from None
    return sorted(values)


# --------------------------------------------------------------------------- build
def _build_config(args: argparse.Namespace):
    """The default BuildConfig with the options given on the command line applied.

    Options left unset keep the dataclass defaults, so the defaults live in builder/config.py only.
    """
    from dataclasses import replace

    from builder.config import BuildConfig

    config = BuildConfig.paper() if args.paper else BuildConfig()
    sections = {
        "scan": {"window": args.window, "top_k": args.top_k, "max_tokens": args.max_tokens},
        "examples": {"pivots": args.pivots},
        "prune": {"enabled": False if args.no_prune else None},
        "saliency": {"mask_token": args.mask_token},
        "augment": {"helper": args.augment, "pivot": args.augment_pivot},
        "fit": {"rule": args.rule, "normalized": args.normalized},
    }
    for name, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            config = replace(config, **{name: replace(getattr(config, name), **given)})
    if args.neuron_batch is not None:
        config = replace(config, neuron_batch=args.neuron_batch)
    if args.dtype is not None:
        config = replace(config, dtype=args.dtype)
    return config


def cmd_build(args: argparse.Namespace) -> int:
    from builder.build import build
    from builder.corpus import resolve_corpus
    from builder.models import load_model

    shape = model_shape(args.model)
    layers = parse_range(args.layers, shape[0] if shape else None)
    neurons = parse_range(args.neurons, shape[1] if shape else None) if args.neurons else None
    if args.sample is not None:
        if shape is None and neurons is None:
            raise UsageError("--sample needs --neurons for a model whose size is not known")
        neurons = sample(neurons if neurons is not None else range(shape[1]), args.sample)
    if shape is not None:
        try:
            check_range(args.model, shape, layers[-1] if layers else None, neurons[-1] if neurons else None)
        except OutOfRange as exc:
            raise UsageError(str(exc)) from None
    resolve_corpus(args.corpus)
    store = Path(args.store) if args.store else Path(args.stores_dir) / store_filename(args.model)
    config = _build_config(args)
    scan_path = Path(args.scan_file) if args.scan_file else Path(args.stores_dir) / scan_filename(args.model)
    if args.scan_file and not scan_path.is_file():
        raise UsageError(f"no scan file at {scan_path}; write one with `n2g scan`")
    check_not_locked(store)  # before the slow model load; the build takes the lock for real
    started = time.perf_counter()
    model = load_model(args.model, hook=args.hook, device=args.device, dtype=config.dtype)
    scan_file = _scan_file(scan_path, model.name)
    loaded = time.perf_counter()
    graphs = build(model, layers, neurons, store, config, corpus=args.corpus, rebuild=args.rebuild,
                   scan_file=scan_file)
    seconds = time.perf_counter() - loaded
    print(f"built {len(graphs)} graphs into {store} in {seconds:.1f} s "
          f"(model load {loaded - started:.1f} s); {model.tokens_forwarded:,} tokens forwarded")
    if graphs:
        print(f"{len(graphs) / seconds:.2f} neurons/s, "
              f"{model.tokens_forwarded / len(graphs):,.0f} tokens forwarded per neuron (scan included)")
    return 0


def _scan_file(path: Path, model: str):
    """The scan file at ``path`` where it is one of ``model`` (else None: the build scans)."""
    from store.scanfile import ScanFile, ScanFileError

    if not path.is_file():
        return None
    try:
        found = ScanFile(path)
    except ScanFileError as exc:
        raise UsageError(str(exc)) from None
    return found if found.model == model else None


def sample(neurons: Sequence[int], count: int, seed: int = 0) -> list[int]:
    """A reproducible random sample of neurons, sorted.

    >>> sample(range(10), 3) == sample(range(10), 3)
    True
    """
    import random

    if count <= 0:
        raise UsageError("--sample must be a positive number of neurons")
    pool = list(neurons)
    return sorted(random.Random(seed).sample(pool, min(count, len(pool))))


def add_build_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``build`` and its options to the sub-commands of a parser; returns its parser.

    ``stores_dir`` is where ``--store`` defaults to ``<model>.jsonl``.
    """
    b = sub.add_parser("build", help="build neuron graphs into a store")
    b.add_argument("--model", default=DEFAULT_MODEL,
                   help="smollm2-135m (embedded), a local HF directory or .gguf, or a hub name")
    b.add_argument("--layers", default="0", help="layers, e.g. 0 or 0-1 or all (default 0)")
    b.add_argument("--neurons", help="neurons, e.g. 0-63 (default: every neuron)")
    b.add_argument("--sample", type=int, help="a random sample of this many of those neurons per "
                                              "layer (seeded; the same on every run)")
    b.add_argument("--store", help="the .jsonl store to append to (default: stores/<model>.jsonl)")
    b.add_argument("--corpus", help="a .txt, .jsonl(.gz) or .parquet file, or a HF dataset name "
                                    "(default: the embedded corpus)")
    b.add_argument("--hook", default=DEFAULT_HOOK, help="neuron hook point")
    b.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    b.add_argument("--window", type=int, help="tokens per corpus window (64)")
    b.add_argument("--top-k", type=int,
                   help="top windows kept per neuron (50: the paper's top 20 plus 30 extra train windows)")
    b.add_argument("--max-tokens", type=int, help="scan at most this many corpus tokens")
    b.add_argument("--augment", choices=["embedding", "model", "distilbert", "none"],
                   help="augmentation helper")
    b.add_argument("--pivots", choices=["argmax", "firing"],
                   help="example tokens of each train window: its argmax, or every firing token")
    b.add_argument("--augment-pivot", action=argparse.BooleanOptionalAction,
                   help="also substitute the activating token (default off)")
    b.add_argument("--no-prune", action="store_true", help="keep whole windows (ablation)")
    b.add_argument("--mask-token", help="token used to mask in saliency (default: unk/pad)")
    b.add_argument("--rule", choices=["all", "greedy"], help="prediction matching rule")
    b.add_argument("--normalized", action=argparse.BooleanOptionalAction,
                   help="match tokens case/space-insensitively (default off: exact)")
    b.add_argument("--paper", action="store_true",
                   help="the paper's method where our defaults differ (10 train windows, argmax "
                        "pivots, context augmentation, uncalibrated fit); other options apply on top")
    b.add_argument("--neuron-batch", type=int, help="neurons built together (64)")
    b.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="numeric type of the model for every stage (default: BuildConfig.dtype)")
    b.add_argument("--rebuild", action="store_true", help="rebuild neurons already in the store")
    b.add_argument("--scan-file", help="a whole-model scan to take top windows from (default: "
                                       "stores/<model>.scan.npz where it exists and matches the corpus)")
    b.set_defaults(func=cmd_build, stores_dir=stores_dir)
    return b


# --------------------------------------------------------------------------- scan
def cmd_scan(args: argparse.Namespace) -> int:
    from builder.config import ScanConfig
    from builder.corpus import make_windows, resolve_corpus
    from builder.models import load_model
    from builder.scan import export_scan_file, scan

    resolve_corpus(args.corpus)
    if args.top_k < 1 or args.window < 2:
        raise UsageError("--top-k must be at least 1 and --window at least 2")
    out = Path(args.out) if args.out else Path(args.stores_dir) / scan_filename(args.model)
    model = load_model(args.model, hook=args.hook, device=args.device)
    config = ScanConfig(window=args.window, top_k=args.top_k, max_tokens=args.max_tokens)
    windows = make_windows(model, args.corpus, config.window, config.max_tokens)
    started = time.perf_counter()
    scans = scan(model, windows, list(range(model.n_layers)), config)
    seconds = time.perf_counter() - started
    export_scan_file(model, windows, scans, out, config)
    print(f"scanned {windows.size:,} tokens through {model.n_layers} layers in {seconds:.0f} s "
          f"({windows.size / seconds:,.0f} tokens/s; cached layers are not scanned again)")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): top {config.top_k} windows, max, firing "
          f"density and quantiles of all {model.n_layers * model.d_mlp:,} neurons")
    return 0


def add_scan_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``scan`` (the whole-model activation scan, written as a scan file) to a parser."""
    s = sub.add_parser("scan", help="scan the corpus through every layer: each neuron's top windows "
                                    "and statistics, into stores/<model>.scan.npz")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="smollm2-135m (embedded), a local HF directory or .gguf, or a hub name")
    s.add_argument("--corpus", help="a .txt, .jsonl(.gz) or .parquet file, or a HF dataset name "
                                    "(default: the embedded corpus)")
    s.add_argument("--out", help="the scan file to write (default: stores/<model>.scan.npz)")
    s.add_argument("--hook", default=DEFAULT_HOOK, help="neuron hook point")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--window", type=int, default=64, help="tokens per corpus window (64)")
    s.add_argument("--top-k", type=int, default=50, help="top windows kept per neuron (50)")
    s.add_argument("--max-tokens", type=int, help="scan at most this many corpus tokens")
    s.set_defaults(func=cmd_scan, stores_dir=stores_dir)
    return s
