"""``n2g build`` and ``n2g scan``: the commands that run a model.

    n2g build --model smollm2-135m --layers 0 --neurons 0-63
    n2g build --layers 0-1 --store stores/smollm2-135m.jsonl --sample 32
    n2g build --layers all --ray --workers 2   # spread over Ray workers (the [distributed] extra)
    n2g scan                      # every layer's top windows and statistics -> stores/<model>.scan.npz

:func:`add_build_command` and :func:`add_scan_command` add the sub-commands to a parser; their
functions load the model and run ``builder.run.runner.run_build`` or ``builder.stages.scan.scan``
(with ``--ray``, ``builder.run.distributed.run_distributed``, whose workers load the model). Importing
this module imports no torch (the command imports the builder when it runs), so ``n2g eval``
stays light; the parsers read their defaults and choices from the torch-free ``builder.config``,
so they are stated once. Layer and neuron ranges are checked with ``store.names.check_range``
before any model loads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from n2g_mcp.cli.ranges import parse_range, sample
from store.catalog import store_filename
from store.errors import BadArgument
from store.examples import resolve
from store.jsonl import read_store
from store.locking import check_not_locked
from store.models import DEFAULT_HOOK, DEFAULT_MODEL, model_shape
from store.names import check_range, parse_neuron_id
from store.scanfile import ScanFile, scan_filename


# --------------------------------------------------------------------------- build
def _build_config(args: argparse.Namespace):
    """The default BuildConfig with the options given on the command line applied.

    Options left unset keep the dataclass defaults, so the defaults live in builder/config.py only.
    """
    from dataclasses import replace

    from builder.config import BuildConfig

    config = BuildConfig.paper() if args.paper else BuildConfig()
    sections = {
        "scan": {"window": args.window, "top_k": args.top_k, "max_tokens": args.max_tokens,
                 # Reused paths were learned from the whole-corpus scan: read the same windows.
                 "part": "build" if args.ordinary and not args.paths_from else None},
        "examples": {"pivots": args.pivots},
        "prune": {"enabled": False if args.no_prune else None},
        "saliency": {"mask_token": args.mask_token},
        "augment": {"helper": args.augment, "pivot": args.augment_pivot},
        "fit": {"rule": args.rule, "normalized": args.normalized},
        "eval": {} if args.short_texts is not False else {"short_before": 0, "short_after": 0},
        "ordinary": {"enabled": args.ordinary, "token_paths": args.token_paths, "bigram_paths": args.bigram_paths},
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
    from builder.corpus import resolve_corpus

    _check_ray_options(args)
    name = args.name or args.model
    shape = model_shape(args.model)
    dictionary = _dictionary(args, name)
    if dictionary is not None:
        name = dictionary.key  # the stores and scans of its latents: <model>.<dictionary>.jsonl
        shape = (shape[0], dictionary.width) if shape and dictionary.width else None
    requested = _requested(args, name, shape)
    resolve_corpus(args.corpus)
    store = Path(args.store) if args.store else Path(args.stores_dir) / store_filename(name)
    config = _build_config(args)
    scan_path = Path(args.scan_file) if args.scan_file else Path(args.stores_dir) / scan_filename(name)
    if args.scan_file and not scan_path.is_file():
        raise BadArgument(f"no scan file at {scan_path}; write one with `n2g scan`")
    check_not_locked(store)  # before the slow model load; the build takes the lock for real
    if args.paths_from and not config.ordinary.enabled:
        raise BadArgument("--paths-from keeps stored graphs' paths to calibrate them on ordinary text: add --ordinary")
    if args.ray is not None:
        if dictionary is not None or args.paths_from:
            raise BadArgument("--dictionary and --paths-from builds run here, not on Ray workers: drop --ray")
        (neurons,) = set(map(_as_key, requested.values()))
        return _build_on_ray(args, list(requested), None if neurons is None else list(neurons), store, config,
                             scan_path)
    return _build_here(args, requested, store, config, scan_path)


def _as_key(neurons: list[int] | None) -> tuple[int, ...] | None:
    return None if neurons is None else tuple(neurons)


def _requested(args: argparse.Namespace, name: str,
               shape: tuple[int, int] | None) -> dict[int, list[int] | None]:
    """Each requested layer's neurons (None: all), from ``--ids`` or ``--layers``/``--neurons``/
    ``--sample``, checked against the model's shape where it is known before loading."""
    if args.ids:
        if args.ray is not None or args.sample is not None or args.neurons:
            raise BadArgument("--ids names the neurons itself: drop --neurons, --sample and --ray")
        by_layer: dict[int, set[int]] = {}
        for part in args.ids.split(","):
            try:
                layer, neuron = parse_neuron_id(part)
            except ValueError as exc:
                raise BadArgument(str(exc)) from None
            if shape is not None:
                check_range(name, shape, layer, neuron)
            by_layer.setdefault(layer, set()).add(neuron)
        return {layer: sorted(ns) for layer, ns in sorted(by_layer.items())}
    layers = parse_range(args.layers, shape[0] if shape else None)
    neurons = parse_range(args.neurons, shape[1] if shape else None) if args.neurons else None
    if args.sample is not None:
        if shape is None and neurons is None:
            raise BadArgument("--sample needs --neurons for a model whose size is not known")
        neurons = sample(neurons if neurons is not None else range(shape[1]), args.sample)
    if shape is not None:
        check_range(name, shape, layers[-1] if layers else None, neurons[-1] if neurons else None)
    return {layer: neurons for layer in layers}


def _build_here(args: argparse.Namespace, requested: dict[int, list[int] | None], store: Path, config,
                scan_path: Path) -> int:
    """Load the model once and build each layer's requested neurons (None: all) into ``store``."""
    from builder.models import load_model
    from builder.run.runner import BuildSource, run_build

    started = time.perf_counter()
    model = _with_dictionary(args, load_model(args.model, hook=args.hook, device=args.device, as_name=args.name,
                                              dtype=config.dtype))
    scan_file = _scan_file(scan_path, model.key)
    loaded = time.perf_counter()
    source = BuildSource(model, config, corpus=args.corpus, scan_file=scan_file)
    reuse = _reusable(Path(args.paths_from), model.key, config, set(requested)) if args.paths_from else None
    if reuse is not None and not (args.ids or args.neurons or args.sample):  # the neurons the store holds
        requested = {layer: sorted(n for at, n in reuse if at == layer) for layer in requested}
        requested = {layer: neurons for layer, neurons in requested.items() if neurons}
    # One run for every layer, which gathers every layer's traces in one pass.
    graphs = run_build(model, list(requested), requested, store, config, source, rebuild=args.rebuild, reuse=reuse)
    seconds = time.perf_counter() - loaded
    print(f"built {len(graphs)} graphs into {store} in {seconds:.1f} s "
          f"(model load {loaded - started:.1f} s); {model.tokens_forwarded:,} tokens forwarded")
    if graphs:
        print(f"{len(graphs) / seconds:.2f} neurons/s, "
              f"{model.tokens_forwarded / len(graphs):,.0f} tokens forwarded per neuron (scan included)")
    return 0


STAGES = ("examples", "prune", "saliency", "augment", "fit")
"""The config sections that make a graph's paths: a stored graph built with the same ones has the
paths this build would fit, so ``--paths-from`` may keep them."""


def _reusable(path: Path, key: str, config, layers: set[int]) -> dict:
    """The graphs of the store at ``path`` whose paths this build would fit (same model, same
    stage settings, alive, not calibrated already), by ``(layer, neuron)``, in ``layers``; the
    others are built from their examples."""
    if not path.is_file():
        raise BadArgument(f"no store at {path} to take paths from")
    store = read_store(path, layers=layers)
    if store.model != key:
        raise BadArgument(f"{path} holds {store.model}'s graphs, not {key}'s")
    wanted = config.to_dict()
    # Through JSON, as the stored configs were (tuples read back as lists).
    wanted = {name: orjson.loads(orjson.dumps(wanted[name])) for name in STAGES}
    ref = store.header.scan
    scan = ScanFile(path.parent / ref.name) if ref is not None else None  # the pruned examples' text
    out = {}
    for g in store:
        made = g.build.get("config") or {}
        fitted = not (made.get("ordinary") or {}).get("enabled")  # a calibrated graph holds more than its fit
        if g.fidelity is not None and fitted and all(made.get(n) == wanted[n] for n in STAGES):
            # As text: the new store may name another scan file, or none.
            out[(g.layer, g.neuron)] = g.model_copy(update={"pruned": resolve(g.pruned, scan)})
    print(f"keeping the fitted paths of {len(out):,} graphs of {path} (of its {len(store.graphs):,} at these layers)",
          file=sys.stderr)
    return out


def _build_on_ray(args: argparse.Namespace, layers: list[int], neurons: list[int] | None,
                  store: Path, config, scan_path: Path) -> int:
    """``n2g build --ray``: the same build, spread over Ray workers that each load the model."""
    import functools

    from builder.models import load_model
    from builder.run.distributed import run_distributed

    started = time.perf_counter()
    load = functools.partial(load_model, args.model, hook=args.hook, device=args.device, as_name=args.name,
                             dtype=config.dtype)
    result = run_distributed(load, layers, neurons, store, config, _distributed_config(args),
                             corpus=args.corpus, scan_path=scan_path, rebuild=args.rebuild,
                             on_event=_report)
    print(f"built {result.appended} graphs into {store} in {time.perf_counter() - started:.1f} s "
          f"({result.units} units; {result.recovered} graphs recovered from shards; "
          f"{len(result.lost_workers)} workers lost)")
    if result.built_by:
        print(f"{len(result.built_by)} workers built: "
              + ", ".join(f"{who} {n}" for who, n in sorted(result.built_by.items())))
    return 0


def _dictionary(args: argparse.Namespace, model: str):
    """The ``--dictionary NAME=PATH`` given (a ``store.dictionaries.DictionarySpec``), or None."""
    from store.dictionaries import parse_dictionary_option

    if not getattr(args, "dictionary", None):
        return None
    try:
        return parse_dictionary_option(args.dictionary, model)
    except ValueError as exc:
        raise BadArgument(str(exc)) from None


def _with_dictionary(args: argparse.Namespace, model):
    """The loaded model reading the ``--dictionary``'s latents in place of its neurons (or as it is)."""
    spec = _dictionary(args, model.name)
    if spec is None:
        return model
    from builder.dictionaries.formats import load_dictionary

    return model.with_units(load_dictionary(spec.location, spec.name, model.name))


def _scan_file(path: Path, model: str):
    """The scan file at ``path`` where it is one of ``model`` (a units key; else None: the build scans)."""
    from store.scanfile import ScanFile, ScanFileError

    if not path.is_file():
        return None
    try:
        found = ScanFile(path)
    except ScanFileError as exc:
        raise BadArgument(str(exc)) from None
    return found if found.key == model else None


def _add_ray_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--ray`` and the worker options, shared by build and scan."""
    r = parser.add_argument_group(f"spreading the {what} over Ray (pip install 'n2g-mcp[distributed]')")
    r.add_argument("--ray", nargs="?", const="local", metavar="local|ADDRESS",
                   help=f"{what} on Ray workers: 'local' (the default) starts a cluster on this "
                        "machine; 'auto' joins the one `ray start --head` started; or HOST:PORT")
    r.add_argument("--workers", type=int, help="Ray workers, each loading the model (2)")
    r.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (1)")
    r.add_argument("--gpus-per-worker", type=float,
                   help="GPUs per worker (default: 1 where the cluster has GPUs, else 0: CPUs)")


_RAY_OPTIONS = ("workers", "cpus_per_worker", "gpus_per_worker", "unit_neurons", "span_windows")


def _check_ray_options(args: argparse.Namespace) -> None:
    """Refuse worker options without ``--ray`` (they would be ignored without a word)."""
    given = [f"--{name.replace('_', '-')}" for name in _RAY_OPTIONS if getattr(args, name, None) is not None]
    if args.ray is None and given:
        raise BadArgument(f"{', '.join(given)} apply to a run on Ray workers: add --ray (local, auto "
                          "or a cluster address), or drop them")


def _distributed_config(args: argparse.Namespace):
    """The DistributedConfig with the options given applied (its defaults live in the dataclass)."""
    from builder.run.cluster import DistributedConfig

    given = {name: getattr(args, name) for name in _RAY_OPTIONS[:4] if getattr(args, name, None) is not None}
    return DistributedConfig(address=args.ray, **given)


def _report(event) -> None:
    """One line on stderr for each event of a distributed run (stdout keeps the summary)."""
    import sys

    who = f"{event.worker.host}:{event.worker.pid}" if event.worker else ""
    unit = event.unit.name if event.unit is not None else ""
    text = {"worker": f"worker {who} ready",
            "unit": f"{unit} done by {who}" + (f": {event.graphs} graphs" if event.graphs else ""),
            "lost": f"worker {who} lost with {unit}; {event.graphs} graphs kept from its shard, "
                    "the rest queued again",
            "merged": f"{event.graphs} graphs merged from the shards of an earlier run"}
    print(f"n2g: {text[event.kind]}", file=sys.stderr, flush=True)


def add_build_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``build`` and its options to the sub-commands of a parser; returns its parser.

    ``stores_dir`` is where ``--store`` defaults to ``<model>.jsonl``.
    """
    from builder.config import DTYPES, BuildConfig, OrdinaryConfig, ScanConfig

    b = sub.add_parser("build", help="build neuron graphs into a store")
    b.add_argument("--model", default=DEFAULT_MODEL,
                   help="smollm2-135m or gemma3-270m (embedded), a local HF directory or .gguf, or a hub name")
    b.add_argument("--name", help="file the graphs under this model name (default: --model as given), "
                                  "the NAME of n2g-mcp --model NAME=PATH that serves them")
    b.add_argument("--layers", default="0", help="layers, e.g. 0 or 0-1 or all (default 0)")
    b.add_argument("--neurons", help="neurons, e.g. 0-63 (default: every neuron)")
    b.add_argument("--ids", help="neuron ids across layers, e.g. L16/N1425,L17/N749 (instead of "
                                 "--layers and --neurons: the neurons a probe or a search named)")
    b.add_argument("--sample", type=int, help="a random sample of this many of those neurons per "
                                              "layer (seeded; the same on every run)")
    b.add_argument("--store", help="the .jsonl store to append to (default: stores/<model>.jsonl)")
    b.add_argument("--corpus", help="a .txt, .jsonl(.gz) or .parquet file, or a HF dataset name "
                                    "(default: the embedded corpus)")
    b.add_argument("--hook", default=DEFAULT_HOOK, help="neuron hook point")
    b.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    b.add_argument("--window", type=int, help=f"tokens per corpus window ({ScanConfig.window})")
    b.add_argument("--top-k", type=int,
                   help=f"top windows kept per neuron ({ScanConfig.top_k}: the paper's top 20 plus "
                        "extra train windows)")
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
    b.add_argument("--ordinary", action=argparse.BooleanOptionalAction,
                   help="calibrate each graph on ordinary text (build-split corpus windows; graded ENDs, the "
                        "most specific path predicts) and score it on the held-out documents, scanning the "
                        "build split only (default off; docs/fidelity.md, held-out section)")
    b.add_argument("--token-paths", type=int, help="with --ordinary: context-free paths a graph may add "
                   f"({OrdinaryConfig.token_paths}; more for a layer whose neurons are nearly token functions)")
    b.add_argument("--bigram-paths", type=int,
                   help=f"with --ordinary: (token, previous token) paths a graph may add ({OrdinaryConfig.bigram_paths})")
    b.add_argument("--paths-from", metavar="STORE",
                   help="with --ordinary: keep the fitted paths of this store's graphs built with the same stage "
                        "settings (prune, saliency, augment, fit) and only calibrate and score them; the others "
                        "are built from their examples (how the shipped atlas was recalibrated). Without "
                        "--neurons, --ids or --sample: the neurons of the layers asked that the store holds")
    b.add_argument("--short-texts", action=argparse.BooleanOptionalAction,
                   help="score each graph on its test windows cut short and measured again (default on; off "
                        "saves a forward pass of ~330 tokens a neuron, most of a calibration of deep layers)")
    b.add_argument("--paper", action="store_true",
                   help="the paper's method where our defaults differ (10 train windows, argmax "
                        "pivots, context augmentation, uncalibrated fit); other options apply on top")
    b.add_argument("--neuron-batch", type=int, help=f"neurons built together ({BuildConfig.neuron_batch})")
    b.add_argument("--dtype", choices=DTYPES,
                   help=f"numeric type of the model for every stage ({BuildConfig.dtype})")
    b.add_argument("--rebuild", action="store_true", help="rebuild neurons already in the store")
    b.add_argument("--scan-file", help="a whole-model scan to take windows and top windows from "
                                       "(default: stores/<model>.scan.npz where it exists; with "
                                       "--corpus, used only where it was made over that corpus)")
    b.add_argument("--dictionary", metavar="NAME=PATH",
                   help="build graphs of a dictionary's latents (an SAE or transcoder folder in SAELens, "
                        "sparsify or Gemma Scope 2 format) instead of neurons; --neurons then counts latents, "
                        "the store is stores/<model>.<NAME>.jsonl")
    _add_ray_options(b, "build")
    b.add_argument("--unit-neurons", type=int,
                   help="with --ray: neurons of one layer a work unit (256); a killed worker loses "
                        "at most one")
    b.set_defaults(func=cmd_build, stores_dir=stores_dir)
    return b


# --------------------------------------------------------------------------- scan
def cmd_scan(args: argparse.Namespace) -> int:
    from builder.config import ScanConfig
    from builder.corpus import make_windows, resolve_corpus
    from builder.models import load_model
    from builder.stages.scan import export_scan_file, scan

    _check_ray_options(args)
    resolve_corpus(args.corpus)
    if args.top_k < 1 or args.window < 2:
        raise BadArgument("--top-k must be at least 1 and --window at least 2")
    dictionary = _dictionary(args, args.name or args.model)
    key = dictionary.key if dictionary is not None else args.name or args.model
    out = Path(args.out) if args.out else Path(args.stores_dir) / scan_filename(key)
    config = ScanConfig(window=args.window, top_k=args.top_k, max_tokens=args.max_tokens)
    if args.ray is not None:
        if dictionary is not None:
            raise BadArgument("--dictionary scans run here, not on Ray workers: drop --ray")
        return _scan_on_ray(args, out, config)
    model = _with_dictionary(args, load_model(args.model, hook=args.hook, device=args.device, as_name=args.name,
                                              dtype=args.dtype))
    windows = make_windows(model, args.corpus, config.window, config.max_tokens)
    started = time.perf_counter()
    layers = list(range(model.n_layers)) if model.units is None else sorted(model.units.layers)
    scans = scan(model, windows, layers, config)
    seconds = time.perf_counter() - started
    export_scan_file(model, windows, scans, out, config)
    print(f"scanned {windows.size:,} tokens through {len(layers)} layers in {seconds:.0f} s "
          f"({windows.size / seconds:,.0f} tokens/s; cached layers are not scanned again)")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): top {config.top_k} windows, max, firing "
          f"density and quantiles of all {len(layers) * model.d_mlp:,} {model.units_name}")
    return 0


def _scan_on_ray(args: argparse.Namespace, out: Path, config) -> int:
    """``n2g scan --ray``: the same scan file, the corpus cut into spans scanned by Ray workers."""
    import functools

    from builder.models import load_model
    from builder.run.distributed_scan import run_distributed_scan

    started = time.perf_counter()
    load = functools.partial(load_model, args.model, hook=args.hook, device=args.device, as_name=args.name,
                             dtype=args.dtype)
    dist = _distributed_config(args)
    spans = {} if args.span_windows is None else {"span_windows": args.span_windows}
    run_distributed_scan(load, out, config, dist, corpus=args.corpus, on_event=_report, **spans)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s "
          f"on {dist.workers} Ray workers")
    return 0


def add_scan_command(sub: argparse._SubParsersAction, stores_dir: Path) -> argparse.ArgumentParser:
    """Add ``scan`` (the whole-model activation scan, written as a scan file) to a parser."""
    from builder.config import DTYPES, BuildConfig, ScanConfig

    s = sub.add_parser("scan", help="scan the corpus through every layer: each neuron's top windows "
                                    "and statistics, into stores/<model>.scan.npz")
    s.add_argument("--model", default=DEFAULT_MODEL,
                   help="smollm2-135m or gemma3-270m (embedded), a local HF directory or .gguf, or a hub name")
    s.add_argument("--name", help="file the scan under this model name (default: --model as given), "
                                  "the NAME of n2g-mcp --model NAME=PATH that serves it")
    s.add_argument("--corpus", help="a .txt, .jsonl(.gz) or .parquet file, or a HF dataset name "
                                    "(default: the embedded corpus)")
    s.add_argument("--out", help="the scan file to write (default: stores/<model>.scan.npz)")
    s.add_argument("--hook", default=DEFAULT_HOOK, help="neuron hook point")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--window", type=int, default=ScanConfig.window,
                   help=f"tokens per corpus window ({ScanConfig.window})")
    s.add_argument("--top-k", type=int, default=ScanConfig.top_k,
                   help=f"top windows kept per neuron ({ScanConfig.top_k})")
    s.add_argument("--dtype", choices=DTYPES,
                   help=f"numeric type of the model for the scan ({BuildConfig.dtype})")
    s.add_argument("--max-tokens", type=int, help="scan at most this many corpus tokens")
    s.add_argument("--dictionary", metavar="NAME=PATH",
                   help="scan a dictionary's latents (its layers) instead of the neurons, into "
                        "stores/<model>.<NAME>.scan.npz")
    _add_ray_options(s, "scan")
    s.add_argument("--span-windows", type=int,
                   help="with --ray: corpus windows a work unit (2048)")
    s.set_defaults(func=cmd_scan, stores_dir=stores_dir)
    return s
