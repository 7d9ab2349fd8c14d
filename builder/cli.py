"""``n2g build``: the builder's command line, which ``n2g_mcp/cli.py`` dispatches to.

    n2g build --model smollm2-135m --layers 0 --neurons 0-63
    n2g build --layers 0-1 --store stores/smollm2-135m.jsonl --sample 32

:func:`add_build_command` adds the ``build`` sub-command to a parser; its function loads the
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
    check_not_locked(store)  # before the slow model load; the build takes the lock for real
    started = time.perf_counter()
    model = load_model(args.model, hook=args.hook, device=args.device)
    loaded = time.perf_counter()
    graphs = build(model, layers, neurons, store, config, corpus=args.corpus, rebuild=args.rebuild)
    seconds = time.perf_counter() - loaded
    print(f"built {len(graphs)} graphs into {store} in {seconds:.1f} s "
          f"(model load {loaded - started:.1f} s); {model.tokens_forwarded:,} tokens forwarded")
    if graphs:
        print(f"{len(graphs) / seconds:.2f} neurons/s, "
              f"{model.tokens_forwarded / len(graphs):,.0f} tokens forwarded per neuron (scan included)")
    return 0


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
    b.add_argument("--top-k", type=int, help="top examples per neuron (20)")
    b.add_argument("--max-tokens", type=int, help="scan at most this many corpus tokens")
    b.add_argument("--augment", choices=["embedding", "model", "distilbert", "none"],
                   help="augmentation helper")
    b.add_argument("--pivots", choices=["argmax", "firing"],
                   help="example tokens of each train window: its argmax, or every firing token")
    b.add_argument("--augment-pivot", action=argparse.BooleanOptionalAction,
                   help="also substitute the activating token (default on)")
    b.add_argument("--no-prune", action="store_true", help="keep whole windows (ablation)")
    b.add_argument("--mask-token", help="token used to mask in saliency (default: unk/pad)")
    b.add_argument("--rule", choices=["all", "greedy"], help="prediction matching rule")
    b.add_argument("--normalized", action=argparse.BooleanOptionalAction,
                   help="match tokens case/space-insensitively (default on)")
    b.add_argument("--paper", action="store_true",
                   help="the paper's method where our defaults differ (argmax pivots, context-only "
                        "augmentation, exact matching); other options apply on top")
    b.add_argument("--neuron-batch", type=int, help="neurons built together (64)")
    b.add_argument("--rebuild", action="store_true", help="rebuild neurons already in the store")
    b.set_defaults(func=cmd_build, stores_dir=stores_dir)
    return b
