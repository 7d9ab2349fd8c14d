"""The ``n2g`` command: build neuron graphs into a store, and report their fidelity.

    n2g build --model smollm2-135m --layers 0 --neurons 0-63
    n2g eval  --store stores/smollm2-135m.jsonl
    n2g store compact stores/smollm2-135m.jsonl stores/smollm2-135m.jsonl.gz

Bad arguments end with one line on stderr and exit status 2, never a traceback. The builder
(and torch) is imported only by the commands that run a model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from builder.models import DEFAULT_MODEL  # imports no torch
from n2g_mcp.paths import default_stores_dir
from store.catalog import store_filename
from store.graph import NeuronGraph
from store.jsonl import (Store, StoreError, check_not_locked, describe_corrupt, read_header, read_store,
                         write_store)
from store.metrics import mean_defined


PAPER_TABLE_1 = {
    # layer: (N2G P, R, F1), (token lookup P, R, F1), (5-gram P, R, F1); SoLU-6L, Foote et al. 2023
    0: ((.67, .84, .68), (.45, .89, .53), (.97, .13, .17)),
    1: ((.64, .82, .65), (.36, .90, .44), (.96, .14, .18)),
    2: ((.56, .75, .55), (.29, .85, .37), (.93, .14, .17)),
    3: ((.45, .71, .45), (.23, .82, .30), (.91, .16, .18)),
    4: ((.39, .66, .38), (.22, .78, .28), (.89, .16, .18)),
    5: ((.38, .68, .37), (.20, .81, .27), (.86, .26, .28)),
}


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
    from builder.models import load_model, model_shape

    shape = model_shape(args.model)
    layers = parse_range(args.layers, shape[0] if shape else None)
    neurons = parse_range(args.neurons, shape[1] if shape else None) if args.neurons else None
    if args.sample is not None:
        if shape is None and neurons is None:
            raise UsageError("--sample needs --neurons for a model whose size is not known")
        neurons = sample(neurons if neurons is not None else range(shape[1]), args.sample)
    if shape is not None:
        _check_ranges(args.model, shape, layers, neurons)
    resolve_corpus(args.corpus)
    store = Path(args.store) if args.store else default_stores_dir() / store_filename(args.model)
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


def _check_ranges(model: str, shape: tuple[int, int], layers: Sequence[int],
                  neurons: Sequence[int] | None) -> None:
    n_layers, d_mlp = shape
    if layers and layers[-1] >= n_layers:
        raise UsageError(f"layer {layers[-1]} is out of range: {model} has layers 0-{n_layers - 1}")
    if neurons and neurons[-1] >= d_mlp:
        raise UsageError(f"neuron {neurons[-1]} is out of range: {model} has neurons 0-{d_mlp - 1}")


# --------------------------------------------------------------------------- eval
METHODS = (("n2g", "N2G"), ("token_lookup", "Token lookup"), ("ngram_lookup", "5-gram lookup"))


def fidelity_table(graphs: Sequence[NeuronGraph], protocol: str = "top") -> str:
    """Per-layer means of precision, recall, F1 and correlation (r), as a markdown table.

    ``protocol`` is ``"top"`` (test top examples: the paper's Table 1) or ``"random"`` (random
    windows added as negatives).
    """
    by_layer: dict[int, list[NeuronGraph]] = {}
    for g in graphs:
        if g.fidelity is not None:
            by_layer.setdefault(g.layer, []).append(g)
    cols = ["P", "R", "F1", "r"]
    head = "| layer | neurons | " + " | ".join(f"{name} {c}" for _, name in METHODS for c in cols) + " |"
    lines = [head, "|" + " --- |" * (2 + len(cols) * len(METHODS))]
    for layer in sorted(by_layer):
        group = by_layer[layer]
        cells = []
        for key, _ in METHODS:
            scores = [getattr(getattr(g.fidelity, key), protocol) for g in group]
            values = [mean_defined(s.precision for s in scores), mean_defined(s.recall for s in scores),
                      mean_defined(s.f1 for s in scores), mean_defined(s.correlation for s in scores)]
            cells += ["-" if v is None else f"{v:.2f}" for v in values]
        lines.append(f"| {layer} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_table() -> str:
    """The paper's Table 1 (SoLU-6L) in the same layout, for comparison."""
    lines = ["| layer | " + " | ".join(f"{n} {c}" for _, n in METHODS for c in ("P", "R", "F1")) + " |",
             "|" + " --- |" * 10]
    for layer, rows in PAPER_TABLE_1.items():
        lines.append(f"| {layer} | " + " | ".join(f"{v:.2f}" for row in rows for v in row) + " |")
    return "\n".join(lines)


def _read(path: str) -> Store:
    """A store, its lines checked against its model's shape where the header lacks it."""
    from builder.models import model_shape  # imports no torch

    return read_store(path, shape=model_shape(read_header(path).model))


def cmd_eval(args: argparse.Namespace) -> int:
    store = _read(args.store)
    if report := describe_corrupt(store):
        print(report, file=sys.stderr)
    graphs = list(store)
    if args.layers:
        wanted = set(parse_range(args.layers))
        graphs = [g for g in graphs if g.layer in wanted]
    if not graphs:
        raise UsageError(f"no graphs in {args.store}" + (f" for layers {args.layers}" if args.layers else ""))
    dead = sum(g.fidelity is None for g in graphs)
    print(f"{store.model}: {len(graphs)} graphs ({dead} dead neurons without fidelity) in {args.store}\n")
    print("Test top-activating examples only (the paper's Table 1 protocol); means over neurons; "
          "r = Pearson correlation:\n")
    print(fidelity_table(graphs, "top"))
    print("\nWith random corpus windows added as negatives:\n")
    print(fidelity_table(graphs, "random"))
    if args.paper:
        print("\nThe paper's Table 1 (SoLU-6L, Foote et al. 2023):\n")
        print(paper_table())
    return 0


# --------------------------------------------------------------------------- store
def cmd_compact(args: argparse.Namespace) -> int:
    store = _read(args.source)
    if report := describe_corrupt(store):
        print(report, file=sys.stderr)
    count = write_store(args.target, store.model, store, shape=store.shape)
    print(f"wrote {count} graphs of {store.model} to {args.target}")
    return 0


# --------------------------------------------------------------------------- parser
def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``n2g``."""
    parser = argparse.ArgumentParser(prog="n2g", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

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
    b.add_argument("--hook", default="blocks.{layer}.mlp.hook_post", help="neuron hook point")
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
    b.set_defaults(func=cmd_build)

    e = sub.add_parser("eval", help="per-layer fidelity of a store vs the paper's baselines")
    e.add_argument("--store", default=str(default_stores_dir() / store_filename(DEFAULT_MODEL)))
    e.add_argument("--layers", help="only these layers")
    e.add_argument("--paper", action="store_true", help="also print the paper's Table 1")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("store", help="store maintenance")
    ssub = s.add_subparsers(dest="store_command", required=True)
    c = ssub.add_parser("compact", help="rewrite a store (last line per neuron wins); .gz compresses")
    c.add_argument("source")
    c.add_argument("target")
    c.set_defaults(func=cmd_compact)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``n2g``."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "transformer_lens", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("n2g: interrupted; finished batches are in the store, run again to resume", file=sys.stderr)
        return 130
    except (UsageError, StoreError, FileNotFoundError) as exc:
        print(f"n2g: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from builder.errors import N2GError  # only here: every other path stays torch-free

        if isinstance(exc, N2GError):
            print(f"n2g: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
