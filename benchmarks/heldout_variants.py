"""The predictors ``benchmarks/heldout.py`` compares, and its tables.

Each variant maps (a neuron's shipped trie, the calibration sample, its activations there) to a
predictor over token-class windows. Two protocols:

- ``validation``: calibrated on three quarters of the build-split sample, scored on the other
  quarter (build-split text only: where variants are *chosen*, so that the held-out documents
  stay out of method choice);
- ``heldout``: calibrated on the whole build-split sample, scored on every held-out token (the
  figure reported).

With the top-window pass, also F1 on the paper's protocol: the graph's stored test windows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from builder.stages.corpus_calibration import CalibrationConfig, Sample, calibrate, default_value, token_means
from builder.config import FitConfig
from builder.stages.fit import snippet_path
from builder.stages.heldout import (
    CompiledGraph,
    LayerMeans,
    TokenClasses,
    apply_lookup,
    fires_enough,
    interval_windows,
    max_lookup,
    mean_lookup,
    predict_windows,
    repeat_runs,
    score_windows,
)
from store.metrics import mean_defined
from store.trie import NeuronTrie

SCAN_VOCAB = "stores/smollm2-135m.scan.npz"


@dataclass(frozen=True)
class Variant:
    """How a variant predicts: ``kind`` 'graph' (a trie, calibrated by ``config`` unless None),
    'floor' (the build-sample mean lookup) or 'top_lookup' (the paper's, on the train top
    windows)."""

    kind: str
    config: CalibrationConfig | None = None
    rule: str = "all"
    note: str = ""
    embedding: bool = False
    """The default where no path matches is a ridge map from the token's embedding (fitted on
    the sample's token means), not one value."""
    clusters: int = 0
    """The default where no path matches is the neuron's mean over the token's class among this
    many k-means clusters of the token embeddings (the paper's "abstract token classes"); 0: none."""
    floor_default: bool = False
    """The default is the floor's own lookup (every token's sample mean): an upper bound that no
    compact graph stores, showing what the paths add over the floor."""


BASE = CalibrationConfig()
VARIANTS: dict[str, Variant] = {
    "shipped": Variant("graph", None, note="the shipped graphs as they are"),
    "floor": Variant("floor", note="token lookup: mean per token over the build sample"),
    "recal": Variant("graph", BASE, note="shipped paths, END = mean of their matches in the build sample"),
    "recal_drop": Variant("graph", replace(BASE, unmatched="drop"), note="... paths unmatched in the sample dropped"),
    "recal_prior2": Variant("graph", replace(BASE, prior=2.0, unmatched="backoff"),
                            note="... END shrunk toward the token's mean (2 pseudo-matches)"),
    "recal_tokens": Variant("graph", replace(BASE, token_paths=True),
                            note="recal + a context-free path for every token with sample mean >= 0.05"),
    "recal_tokens_specific": Variant("graph", replace(BASE, token_paths=True), rule="specific",
                                     note="... prediction by the most specific matching path"),
    "recal_tokens_bigrams": Variant("graph", replace(BASE, token_paths=True, bigram_paths=True),
                                    note="recal_tokens + (token, previous) paths whose mean departs by >= 0.15"),
    "recal_tokens_bigrams_specific": Variant(
        "graph", replace(BASE, token_paths=True, bigram_paths=True), rule="specific",
        note="... prediction by the most specific matching path"),
    "default_tokens05": Variant("graph", replace(BASE, token_paths=True, default=True),
                                note="recal + the neuron's sample mean where no path matches + token paths "
                                     "where a token's mean departs from it by >= 0.05 (either way)"),
    "default_tokens02": Variant("graph", replace(BASE, token_paths=True, default=True, token_delta=0.02),
                                note="... departs by >= 0.02"),
    "default_tokens_all": Variant("graph", replace(BASE, token_paths=True, default=True, token_delta=0.0),
                                  note="... every token seen 3 times (an upper bound; large graphs)"),
    "default_tokens05_bigrams_specific": Variant(
        "graph", replace(BASE, token_paths=True, default=True, bigram_paths=True), rule="specific",
        note="default_tokens05 + (token, previous) paths departing by >= 0.15, most specific path"),
    "default_tokens02_bigrams_specific": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.02, bigram_paths=True),
        rule="specific", note="default_tokens02 + bigram paths, most specific path"),
    "default_tokens_top200": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, token_budget=200, prior=2.0),
        note="default + the 200 token paths that explain most variance (END shrunk by 2 pseudo-counts)"),
    "default_tokens_top200_bigrams100_specific": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, token_budget=200, prior=2.0,
                         bigram_paths=True, bigram_delta=0.05, bigram_budget=100), rule="specific",
        note="... + the 100 bigram paths that explain most variance, most specific path"),
    "proposed": Variant(
        "graph", replace(BASE, prior=2.0, unmatched="backoff", token_paths=True, default=True, token_delta=0.0,
                         token_budget=200, bigram_paths=True, bigram_delta=0.05, bigram_budget=100),
        rule="specific",
        note="recal (2 pseudo-matches at the token's mean; unmatched paths at it) + default + 200 token "
             "and 100 bigram paths by variance explained, most specific path"),
    "proposed_all_rule": Variant(
        "graph", replace(BASE, prior=2.0, unmatched="backoff", token_paths=True, default=True, token_delta=0.0,
                         token_budget=200, bigram_paths=True, bigram_delta=0.05, bigram_budget=100),
        note="proposed, predicting by the largest matching END (the trie's rule today)"),
    "proposed_500_200": Variant(
        "graph", replace(BASE, prior=2.0, unmatched="backoff", token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="proposed with 500 token and 200 bigram paths"),
    "proposed_p0": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=200, bigram_paths=True, bigram_delta=0.05, bigram_budget=100),
        rule="specific", note="recal (plain mean, unmatched paths keep their END) + default + 200 token "
                              "and 100 bigram paths by variance explained, most specific path"),
    "proposed_p0_500_200": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="proposed_p0 with 500 token and 200 bigram paths"),
    "proposed_embed": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=200, bigram_paths=True, bigram_delta=0.05, bigram_budget=100),
        rule="specific", embedding=True,
        note="proposed_p0, the default a ridge map from the token's embedding (576 numbers a neuron)"),
    "proposed_embed_500_200": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", embedding=True, note="proposed_embed with 500 token and 200 bigram paths"),
    "proposed_p0_500_200_intervals": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="proposed_p0_500_200 + the paths of pivots from 6 activation intervals (2 each)"),
    "proposed_p0_500_200_tmin1": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, token_min=1,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="proposed_p0_500_200, token paths from tokens seen once"),
    "proposed_clusters256_500_200": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", clusters=256,
        note="proposed_p0_500_200, the default the neuron's mean over the token's embedding cluster (256)"),
    "proposed_clusters1024_500_200": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", clusters=1024, note="... 1,024 clusters"),
    "proposed_clusters1024_200_100": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=200, bigram_paths=True, bigram_delta=0.05, bigram_budget=100),
        rule="specific", clusters=1024, note="... 1,024 clusters, 200 token and 100 bigram paths"),
    **{f"proposed_p0_500_200_share{int(x * 100)}": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, share=x,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note=f"proposed_p0_500_200, the fewest paths explaining {x:.0%} of the candidates' variance")
       for x in (0.8, 0.9, 0.95)},
    **{f"proposed_clusters1024_500_200_share{int(x * 100)}": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, share=x,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", clusters=1024, note=f"proposed_clusters1024_500_200, {x:.0%} of the variance")
       for x in (0.8, 0.9)},
    **{f"proposed_p0_{t}_{b}": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0,
                         token_budget=t, bigram_paths=True, bigram_delta=0.05, bigram_budget=b),
        rule="specific", note=f"proposed_p0 with {t} token and {b} bigram paths")
       for t, b in ((300, 100), (200, 50), (300, 200), (1000, 200), (2000, 200), (4000, 200))},
    "floor_plus_paths": Variant(
        "graph", replace(BASE, default=True, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", floor_default=True,
        note="upper bound: the floor's whole lookup as the default, the recalibrated paths and 200 bigrams"),
    "recal_intervals": Variant("graph", BASE, note="recal + the interval pivots' paths"),
    "proposed_p0_500_200_min5": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, min_matches=5,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="proposed_p0_500_200, paths with < 5 sample matches keep their top-window END"),
    "proposed_p0_500_200_min20": Variant(
        "graph", replace(BASE, token_paths=True, default=True, token_delta=0.0, min_matches=20,
                         token_budget=500, bigram_paths=True, bigram_delta=0.05, bigram_budget=200),
        rule="specific", note="... < 20 sample matches"),
    "recal_tokens_intervals": Variant("graph", replace(BASE, token_paths=True),
                                      note="recal_tokens + paths of pivots from 6 activation intervals (2 each)"),
    "recal_tokens_bigrams_intervals_specific": Variant(
        "graph", replace(BASE, token_paths=True, bigram_paths=True), rule="specific",
        note="recal_tokens_bigrams_specific + the interval paths"),
}


def calibration_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the build sample: the calibration three quarters and the validation quarter."""
    order = np.random.default_rng(2).permutation(n)
    return np.sort(order[: n * 3 // 4]), np.sort(order[n * 3 // 4:])


def _with_intervals(trie: NeuronTrie, paths: list) -> NeuronTrie:
    """The trie with the interval pivots' paths added (END 0 until calibrated)."""
    out = trie.filtered(lambda *_: True)
    for tokens, imp in paths:
        path, weights = snippet_path(tokens, imp, FitConfig().important)
        if path not in out:
            out.insert(path, 0.0, weights)
    return out


_EMBED: dict = {}


def embedding_baseline(cal: Sample, acts: np.ndarray, ridge: float = 10.0) -> np.ndarray:
    """``(classes,)`` a linear map from each token class's embedding (the model's W_E, the first
    id of the class) to the neuron's mean on it, fitted on the sample weighted by counts."""
    E = _embeddings(cal.classes)
    key = (cal.codes.shape, int(cal.codes.sum()))  # the Gram matrix depends on the windows only
    counts, means = token_means(cal, acts)
    seen = np.flatnonzero(counts)
    if key not in _EMBED:
        X = E[seen]
        _EMBED[key] = np.linalg.inv(X.T @ (X * counts[seen][:, None]) + ridge * np.eye(E.shape[1]))
    mean = float(acts.mean())
    coef = _EMBED[key] @ (E[seen].T @ (counts[seen] * (means[seen] - mean)))
    return E @ coef + mean


def _embeddings(classes) -> np.ndarray:
    """``(classes, d)`` the model's W_E row of each token class's first id."""
    from safetensors.numpy import load_file

    from store.models import cache_dir
    if "E" not in _EMBED:
        weights = load_file(cache_dir() / "models" / "smollm2-135m" / "model.safetensors")
        E = next(v for k, v in weights.items() if "embed_tokens" in k).astype(np.float64)
        first = np.zeros(len(classes), dtype=np.int64)
        first[classes.of_id[::-1]] = np.arange(len(classes.of_id))[::-1]
        _EMBED["E"] = E[first]
    return _EMBED["E"]


def token_clusters(classes, k: int, iterations: int = 25, seed: int = 0) -> np.ndarray:
    """``(classes,)`` each token class's k-means cluster of the (unit-normalised) embeddings."""
    key = ("clusters", k)
    if key not in _EMBED:
        X = _embeddings(classes).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True) + 1e-8
        rng = np.random.default_rng(seed)
        centres = X[rng.choice(len(X), k, replace=False)]
        for _ in range(iterations):
            label = np.argmax(X @ centres.T, axis=1)  # cosine: rows are unit length
            sums = np.zeros_like(centres)
            np.add.at(sums, label, X)
            counts = np.bincount(label, minlength=k)
            empty = counts == 0
            centres = np.where(empty[:, None], X[rng.choice(len(X), k)], sums / np.maximum(counts, 1)[:, None])
            centres /= np.linalg.norm(centres, axis=1, keepdims=True) + 1e-8
        _EMBED[key] = np.argmax(X @ centres.T, axis=1)
    return _EMBED[key]


def cluster_baseline(cal: Sample, acts: np.ndarray, k: int, prior: float = 10.0) -> np.ndarray:
    """``(classes,)`` the neuron's mean over each token's cluster in the sample, shrunk toward its
    overall mean by ``prior`` pseudo-tokens."""
    label = token_clusters(cal.classes, k)
    flat = label[cal.codes.reshape(-1)]
    counts = np.bincount(flat, minlength=k)
    sums = np.bincount(flat, weights=acts.reshape(-1), minlength=k)
    mean = float(acts.mean())
    return ((sums + prior * mean) / (counts + prior))[label]


def _vocab() -> list[str]:
    with np.load(SCAN_VOCAB) as z:
        return json.loads(bytes(z["vocab"]).decode())


def _predictor(variant: Variant, trie: NeuronTrie, cal: Sample, cal_acts: np.ndarray,
               train: tuple[np.ndarray, np.ndarray] | None
               ) -> tuple[Callable[[np.ndarray, np.ndarray | None], np.ndarray], int | None]:
    """The predictor, and the graph's number of paths (None for a lookup)."""
    classes = cal.classes
    if variant.kind == "floor":
        table = mean_lookup(cal.codes, cal_acts[:, :, None], len(classes))[:, 0]
        return (lambda codes, runs: table[codes]), None
    if variant.kind == "top_lookup":
        lookup = max_lookup(*train)
        return (lambda codes, runs: apply_lookup(lookup, codes)), None
    baseline = embedding_baseline(cal, cal_acts) if variant.embedding else None
    if variant.clusters:
        baseline = cluster_baseline(cal, cal_acts, variant.clusters)
    if variant.floor_default:
        baseline = mean_lookup(cal.codes, cal_acts[:, :, None], len(classes))[:, 0]
    graph = trie if variant.config is None else calibrate(trie, cal, cal_acts, variant.config, baseline)
    compiled = CompiledGraph.of(graph, classes)
    default = 0.0 if variant.config is None else default_value(cal_acts, variant.config)
    if baseline is not None:
        default = baseline
    return (lambda codes, runs: predict_windows(compiled, codes, runs, variant.rule, default)), len(graph)


def run_variants(data: dict, layers: list[int], names: list[str], shipped_graphs,
                 intervals: dict | None = None, validation: bool = True) -> None:
    vocab = _vocab()
    classes = TokenClasses.of(vocab)
    windows = data["windows"]
    held_codes = classes.of_id[windows[data["held"]]]
    build_codes = classes.of_id[windows[data["build"]]]
    cap = 4  # the shipped fit's longest repeat path (FitConfig.repeat_reach)
    held_runs, build_runs = repeat_runs(held_codes, cap), repeat_runs(build_codes, cap)
    cal_i, val_i = calibration_split(len(build_codes))
    neurons = {layer: data[f"neurons_{layer}"] for layer in layers}
    records = shipped_graphs(layers, neurons)
    has_top = all(f"test_{layer}" in data for layer in layers)
    header = ("| layer | variant | held-out neurons | held-out P / R / F1 | held-out r | r, true clipped at 0 | "
              "interval-protocol r | "
              "validation neurons | "
              "validation P / R / F1 | validation r |" + (" top-window F1 (paper) |" if has_top else "") + " paths | s |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1), flush=True)
    for layer in layers:
        held = data[f"held_{layer}"]  # (W, P, n)
        build = data[f"build_{layer}"]
        full = Sample.of(build_codes, classes, build_runs)
        part = Sample.of(build_codes[cal_i], classes, build_runs[cal_i])
        val_codes, val_runs = build_codes[val_i], build_runs[val_i]
        for name in names:
            variant = VARIANTS[name]
            started = time.perf_counter()
            scores_h, scores_i, scores_v, scores_t, sizes, positive = [], [], [], [], [], []
            for i, n in enumerate(neurons[layer]):
                record = records[(layer, int(n))]
                trie = NeuronTrie.from_rows(record["trie"])
                if record["matching"]["normalized"]:
                    trie = trie.normalized_copy()
                if "interval" in name:
                    trie = _with_intervals(trie, intervals[layer]["paths"][i])
                train = test = None
                if has_top:
                    ids = data[f"testids_{layer}"][:, i]
                    ids = ids[ids >= 0]
                    test = (classes.of_id[windows[ids]], data[f"test_{layer}"][:len(ids), i])
                predict, size = _predictor(variant, trie, full, build[:, :, i], train)
                pred_h = predict(held_codes, held_runs)
                scores_h.append(score_windows(held[:, :, i], pred_h))
                positive.append(score_windows(np.maximum(held[:, :, i], 0.0), pred_h).correlation)
                pick = interval_windows(held[:, :, i], seed=int(n))
                scores_i.append(score_windows(held[pick, :, i], pred_h[pick]))
                if size is not None:
                    sizes.append(size)
                if validation and fires_enough(build[val_i, :, i]):
                    vpredict, _ = _predictor(variant, trie, part, build[cal_i, :, i], train)
                    scores_v.append(score_windows(build[val_i, :, i], vpredict(val_codes, val_runs)))
                if has_top and test is not None and len(test[0]):
                    scores_t.append(score_windows(test[1], predict(test[0], repeat_runs(test[0], cap))))
            h, v, iv = LayerMeans.of(scores_h), LayerMeans.of(scores_v), LayerMeans.of(scores_i)
            top = (f" {LayerMeans.of(scores_t).f1:.2f} |" if has_top and scores_t else "")
            size = f"{np.mean(sizes):.0f}" if sizes else "-"
            pos = mean_defined(positive)
            print(f"| {layer} | {name} | {h.neurons} | {h.row()} | {pos:.2f} | {iv.correlation:.2f} | "
                  f"{v.neurons} | {v.row()} |{top} "
                  f"{size} | {time.perf_counter() - started:.0f} |", flush=True)
