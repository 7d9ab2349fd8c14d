"""Held-out fidelity of graphs, against the floors, on a sample of neurons a layer (issue 28).

    python benchmarks/heldout.py [--layers 1,8,15,22,29] [--neurons 64] [--build-windows 2000]
                                 [--variants shipped,floor,...] [--top]
    python benchmarks/heldout.py --dictionary mlp-3k=dictionaries/smollm2-135m/mlp-3k --layers 7,15,19,25

With ``--dictionary NAME=PATH`` the units are that dictionary's latents: its store
(``stores/smollm2-135m.NAME.jsonl.gz``) and scan, latents sampled as neurons are (issue 29's
neurons-against-latents comparison).

Three model passes, each cached under ``$N2G_CACHE/heldout/`` (so variants rerun without one):

1. every held-out window (``builder.corpus``, 1,047 windows of 64 tokens, 67k tokens), through
   the deepest layer asked, all neurons; per layer a seeded sample of ``--neurons`` among the
   neurons that fire there at least 5 times (normalised by the shipped scan's max);
2. ``--build-windows`` random windows of the build split (never the scan's random negative
   windows), the sampled neurons: the floor's token lookup and the corpus calibration read them;
3. with ``--top``, each sampled neuron's 10 test top windows (as stored in its shipped graph),
   layer by layer: the paper's top-window protocol reads them.

Then one markdown row per layer and variant: P / R / F1 of firing tokens and Pearson r over all
held-out tokens (means over the sampled neurons), and, with ``--top``, F1 on the paper's
protocol (the graph's stored test windows). Variants are named in ``VARIANTS``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORE = ROOT / "stores" / "smollm2-135m.jsonl.gz"
SCAN = ROOT / "stores" / "smollm2-135m.scan.npz"
KEY = "smollm2-135m"
"""The units key measured (``smollm2-135m@NAME`` with ``--dictionary``); names the cache files."""
DICTIONARY: tuple[str, str] | None = None
"""``(name, folder)`` of ``--dictionary``."""


def load_units():
    """SmolLM2, reading the dictionary's latents with ``--dictionary``."""
    from builder.models import load_model

    model = load_model("smollm2-135m")
    if DICTIONARY is None:
        return model
    from builder.dictionaries.formats import load_dictionary

    return model.with_units(load_dictionary(DICTIONARY[1], DICTIONARY[0], model.name))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_folder() -> Path:
    from store.models import cache_dir
    folder = cache_dir() / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def gather(layers: list[int], n_neurons: int, build_windows: int, seed: int, top: bool) -> dict:
    """The three passes (cached): see the module docstring."""
    from builder.corpus import heldout_mask, make_windows
    from builder.stages.heldout import fires_enough, layer_activations
    from store.names import file_safe

    key = hashlib.sha1(repr((layers, n_neurons, build_windows, seed)).encode()).hexdigest()[:10]
    path = cache_folder() / f"{file_safe(KEY)}-{key}.npz"
    top_path = cache_folder() / f"{file_safe(KEY)}-{key}-top.npz"  # per layer: ...-test{layer}.npz
    scan = np.load(SCAN)
    max_act = scan["max_activation"]  # (L, d)
    windows = scan["windows"].astype(np.int64)  # (n, 64)
    model = None
    if not path.exists():
        model = load_units()
        mask = heldout_mask(model, None, windows.shape[1])
        assert (make_windows(model, None, windows.shape[1]) == windows).all(), "scan windows differ"
        held = np.flatnonzero(mask)
        log(f"held-out pass: {len(held)} windows to layer {max(layers)}")
        started, forwarded = time.perf_counter(), model.tokens_forwarded
        acts = layer_activations(model, windows[held], layers)
        seconds_h, tokens_h = time.perf_counter() - started, model.tokens_forwarded - forwarded
        rng = np.random.default_rng(seed)
        chosen, eligible = {}, {}
        for layer in layers:
            norm = acts[layer].astype(np.float32) / max_act[layer]  # (W, P, d)
            counts = (norm >= 0.5).sum(axis=(0, 1))
            ok = np.flatnonzero(counts >= 5)
            eligible[layer] = len(ok)
            chosen[layer] = np.sort(rng.permutation(ok)[:n_neurons])
            acts[layer] = norm[:, :, chosen[layer]]
            assert all(fires_enough(acts[layer][:, :, i]) for i in range(len(chosen[layer])))
        pool = np.setdiff1d(np.flatnonzero(~mask), scan["random_windows"])
        build = np.sort(np.random.default_rng([seed, 1]).choice(pool, build_windows, replace=False))
        log(f"build pass: {len(build)} windows to layer {max(layers)}")
        started, forwarded = time.perf_counter(), model.tokens_forwarded
        bacts = layer_activations(model, windows[build], layers, chosen, dtype=np.float32)
        seconds_b, tokens_b = time.perf_counter() - started, model.tokens_forwarded - forwarded
        arrays = {"held": held, "build": build,
                  "cost": np.array([seconds_h, tokens_h, seconds_b, tokens_b])}
        for layer in layers:
            arrays[f"neurons_{layer}"] = chosen[layer]
            arrays[f"eligible_{layer}"] = np.array(eligible[layer])
            arrays[f"held_{layer}"] = acts[layer].astype(np.float32)
            arrays[f"build_{layer}"] = bacts[layer] / max_act[layer][chosen[layer]]
        np.savez(path, **arrays)
        log(f"cached {path}")
    data = dict(np.load(path))
    records = None
    for layer in layers:
        path_l = top_path.with_name(top_path.name.replace("-top", f"-test{layer}"))
        if top and not path_l.exists():
            records = records or shipped_graphs(layers, {la: data[f"neurons_{la}"] for la in layers})
            model = model or load_units()
            neurons = data[f"neurons_{layer}"]
            # Each graph's own test windows (10 of its top 20, as stored in its record).
            tests = [sorted(row[0] for row in records[(layer, int(n))]["examples"] if row[3] == "test")
                     for n in neurons]
            union = np.unique(np.concatenate(tests))
            log(f"test-window pass: layer {layer}, {len(union)} windows")
            started, forwarded = time.perf_counter(), model.tokens_forwarded
            acts = layer_activations(model, windows[union], [layer], {layer: neurons},
                                     dtype=np.float32)[layer]  # (U, P, n)
            ids = np.full((max(map(len, tests)), len(neurons)), -1)
            traces = np.zeros((ids.shape[0], len(neurons), windows.shape[1]), np.float32)
            for i, t in enumerate(tests):
                ids[:len(t), i] = t
                traces[:len(t), i] = acts[np.searchsorted(union, t), :, i]
            np.savez(path_l, ids=ids, traces=traces / max_act[layer][neurons][None, :, None],
                     cost=np.array([time.perf_counter() - started, model.tokens_forwarded - forwarded]))
        if path_l.exists():  # cached by an earlier --top run
            with np.load(path_l) as z:
                data[f"testids_{layer}"], data[f"test_{layer}"] = z["ids"], z["traces"]
    data["windows"] = windows
    data["top_window"] = scan["top_window"]
    data["max_activation"] = max_act
    return data


def interval_snippets(data: dict, layers: list[int], key: str, intervals: int, per_bin: int) -> dict:
    """Per layer and sampled neuron, the paths of pivots drawn from every activation interval of
    the calibration part of the build sample (``builder.stages.intervals``), pruned and measured by the
    builder's own stages; cached. ``{layer: [[(tokens, importances), ...] per neuron]}``."""
    import pickle

    from builder.config import BuildConfig
    from builder.stages.intervals import interval_examples, interval_pivots
    from store.names import file_safe
    from builder.stages.prune import prune
    from builder.stages.saliency import mask_token_id, saliency
    from benchmarks.heldout_variants import calibration_split

    tag = "-".join(map(str, layers))
    path = cache_folder() / f"{file_safe(KEY)}-{key}-intervals-{intervals}x{per_bin}-L{tag}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    config = BuildConfig()
    model = load_units()
    vocab = model.vocab
    windows = data["windows"][data["build"]]
    cal, _ = calibration_split(len(windows))
    exclude = np.ones(len(windows), dtype=bool)
    exclude[cal] = False
    out: dict = {}
    for layer in layers:
        neurons = data[f"neurons_{layer}"]
        norm = data[f"build_{layer}"]  # (W, P, n)
        examples = []
        for i, n in enumerate(neurons):
            raw = norm[:, :, i] * data["max_activation"][layer][n]
            pivots = interval_pivots(norm[:, :, i], intervals, per_bin, seed=int(n), exclude=exclude)
            examples += interval_examples(windows, raw, int(n), pivots)
        started, forwarded = time.perf_counter(), model.tokens_forwarded
        snippets = prune(model, layer, examples, config.prune, config.max_batch_tokens)
        measured = saliency(model, layer, snippets, mask_token_id(model, config.saliency.mask_token),
                            config.max_batch_tokens, config.saliency.context)
        cost = (time.perf_counter() - started, (model.tokens_forwarded - forwarded) / len(neurons))
        log(f"intervals: layer {layer}, {len(examples)} pivots, {cost[0]:.0f} s, {cost[1]:.0f} tokens a neuron")
        by = {int(n): [] for n in neurons}
        for s, m in zip(snippets, measured, strict=True):
            by[s.neuron].append(([vocab[t] for t in s.tokens], m.importances.astype(float).tolist()))
        out[layer] = {"paths": [by[int(n)] for n in neurons], "cost": cost}
    path.write_bytes(pickle.dumps(out))
    return out


def shipped_graphs(layers: list[int], neurons: dict[int, np.ndarray]) -> dict[tuple[int, int], dict]:
    """The shipped store's records of the sampled neurons (raw JSON)."""
    wanted = {(layer, int(n)) for layer in layers for n in neurons[layer]}
    out = {}
    with gzip.open(STORE, "rb") as f:
        next(f)
        for line in f:
            head = line[:80]
            if b'"layer":' not in head:
                continue
            record = orjson.loads(line)
            k = (record["layer"], record["neuron"])
            if k in wanted:
                out[k] = record
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="1,8,15,22,29")
    parser.add_argument("--neurons", type=int, default=64)
    parser.add_argument("--build-windows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", action="store_true", help="also the top-window pass and protocol")
    parser.add_argument("--gather-only", action="store_true")
    parser.add_argument("--show", default=None, help="layers to table (default: all gathered)")
    parser.add_argument("--intervals", default="6x2", help="bins x pivots a bin for the interval "
                        "variants ('0' to skip their pass)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names")
    parser.add_argument("--no-validation", action="store_true", help="skip the build-split validation columns")
    parser.add_argument("--dictionary", metavar="NAME=PATH", help="measure a dictionary's latents instead")
    args = parser.parse_args()
    if args.dictionary:
        global STORE, SCAN, KEY, DICTIONARY
        from store.catalog import store_filename
        from store.scanfile import scan_filename

        name, _, folder = args.dictionary.partition("=")
        DICTIONARY, KEY = (name, folder), f"smollm2-135m@{name}"
        STORE, SCAN = ROOT / "stores" / (store_filename(KEY) + ".gz"), ROOT / "stores" / scan_filename(KEY)
    layers = [int(x) for x in args.layers.split(",")]
    data = gather(layers, args.neurons, args.build_windows, args.seed, args.top)
    if args.gather_only:
        return
    from benchmarks.heldout_variants import VARIANTS, run_variants
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    extra = {}
    bins, per = (int(x) for x in args.intervals.split("x")) if args.intervals != "0" else (0, 0)
    key = hashlib.sha1(repr((layers, args.neurons, args.build_windows, args.seed)).encode()).hexdigest()[:10]
    shown = [int(x) for x in args.show.split(",")] if args.show else layers
    if args.intervals != "0" and any("interval" in n for n in names):
        extra = interval_snippets(data, shown, key, bins, per)
    run_variants(data, shown, names, shipped_graphs, extra, validation=not args.no_validation)


if __name__ == "__main__":
    main()
