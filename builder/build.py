"""The runner: the N2G stages in order, for many neurons of a layer at once, into a store.

    scan -> split -> prune -> saliency -> augment (new pivots pruned and measured again)
         -> fit -> evaluate -> store

Neurons are taken ``neuron_batch`` at a time; every stage of a batch shares its forward passes
across the batch's neurons. Each finished batch is appended to the store in one write, so a
crash or Ctrl-C loses at most the batch in flight, and a new run skips the neurons already
stored (resume).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from builder.augment import Helper, augment, make_helper
from builder.config import BuildConfig
from builder.corpus import make_windows
from builder.errors import BadRequest, Cancelled
from builder.evaluate import Window, evaluate
from builder.fit import fit
from builder.models import LoadedModel
from builder.prune import Snippet, TopExample, prune
from builder.saliency import saliency
from builder.scan import LayerScan, scan
from store.graph import Example, Matching, NeuronGraph, graph_record
from store.jsonl import StoreWriter, read_store
from store.progress import Progress
from store.trie import NeuronTrie

log = logging.getLogger(__name__)

EXAMPLE_BEFORE, EXAMPLE_AFTER = 24, 8
"""Tokens kept before and after the pivot when a top example is stored for reading."""


def split(k: int, train: int, seed: int, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's random train/test split of a neuron's top examples, reproducible per neuron."""
    order = np.random.default_rng([seed, layer, neuron]).permutation(k)
    return np.sort(order[:train]), np.sort(order[train:])


def _mask_id(model: LoadedModel, config: BuildConfig) -> int:
    token = config.saliency.mask_token
    if token is None:
        return model.mask_id
    ids = model.tokenizer.convert_tokens_to_ids([token])
    unknown = ids and ids[0] == model.tokenizer.unk_token_id and token != model.tokenizer.unk_token
    if not ids or ids[0] is None or unknown:
        raise BadRequest(f"mask token {token!r} is not a single token of {model.name}")
    return int(ids[0])


def _pivots(trace: np.ndarray, max_act: float, config: BuildConfig) -> list[int]:
    """Positions of a training window that become examples (see ``ExampleConfig``)."""
    argmax = int(np.argmax(trace))
    if trace[argmax] <= 0:
        return []
    if config.examples.pivots == "argmax":
        return [argmax]
    firing = np.flatnonzero(trace >= config.examples.firing * max_act).tolist()
    return firing if argmax in firing else [*firing, argmax]


def _stored_example(model: LoadedModel, window: np.ndarray, trace: np.ndarray, split_name: str) -> Example:
    pivot = int(np.argmax(trace))
    start, end = max(0, pivot - EXAMPLE_BEFORE), min(len(window), pivot + EXAMPLE_AFTER + 1)
    return Example(tokens=[model.vocab[t] for t in window[start:end]], pivot=pivot - start,
                   activation=round(float(trace[pivot]), 4), split=split_name)


def _dead_graph(model: LoadedModel, layer: int, neuron: int, max_act: float,
                config: BuildConfig) -> NeuronGraph:
    # A neuron the scan never saw has max -inf; stores hold finite numbers only.
    finite = float(max_act) if np.isfinite(max_act) else 0.0
    return graph_record(model=model.name, layer=layer, neuron=neuron, hook=model.hook(layer),
                        max_activation=finite, trie=NeuronTrie(), matching=Matching(),
                        build={"config": config.to_dict(), "dead": True})


def _measure_variants(model: LoadedModel, layer: int, originals: Sequence[Snippet],
                      importance: Sequence[np.ndarray], variants: Sequence[Snippet], mask: int,
                      config: BuildConfig) -> tuple[list[Snippet], list[np.ndarray]]:
    """Importances of augmented variants, and their final form.

    A variant with a substituted context token inherits its original's importances (or has them
    measured again, with ``augment.saliency = "recompute"``). A variant with a substituted pivot is
    a new example: its new token may fire for other reasons and need a different context, so it
    is pruned and measured afresh.
    """
    mtok = config.max_batch_tokens
    new_pivot = [v.tokens[-1] != originals[v.parent].tokens[-1] for v in variants]
    fresh = prune(model, layer, [TopExample(v.neuron, v.tokens, len(v.tokens) - 1, v.activation)
                                 for v, new in zip(variants, new_pivot, strict=True) if new],
                  config.prune, mtok)
    fresh_iter = iter(fresh)
    out = [Snippet(v.neuron, next(fresh_iter).tokens, v.activation, v.parent) if new else v
           for v, new in zip(variants, new_pivot, strict=True)]
    imps = [importance[v.parent] for v in out]
    remeasure = [i for i, new in enumerate(new_pivot) if new or config.augment.saliency == "recompute"]
    measured, acts = saliency(model, layer, [out[i] for i in remeasure], mask, mtok)
    for i, imp, act in zip(remeasure, measured, acts, strict=True):
        imps[i] = imp
        out[i] = Snippet(out[i].neuron, out[i].tokens, float(act), out[i].parent)
    return out, imps


def _neuron_graph(model: LoadedModel, layer: int, neuron: int,
                  items: Sequence[tuple[Snippet, np.ndarray]], layer_scan: LayerScan,
                  windows: np.ndarray, halves: tuple[np.ndarray, np.ndarray], matching: Matching,
                  config: BuildConfig, cost: dict[str, float]) -> NeuronGraph:
    """Fit one neuron's graph from its snippets, then score the stored graph on held-out text."""
    vocab = model.vocab
    max_act = float(layer_scan.max_activation[neuron])
    trie = fit([[vocab[t] for t in s.tokens] for s, _ in items], [imp for _, imp in items],
               [s.activation / max_act for s, _ in items], config.fit)
    train, test = halves
    examples = [_stored_example(model, windows[layer_scan.windows[j, neuron]], layer_scan.traces[j, neuron], name)
                for name, part in (("train", train), ("test", test)) for j in part]
    pruned = [Example(tokens=[vocab[t] for t in s.tokens], pivot=len(s.tokens) - 1,
                      activation=round(s.activation, 4), split="train",
                      importances=[round(float(v), 3) for v in imp])
              for s, imp in items if s.parent < 0]
    graph = graph_record(
        model=model.name, layer=layer, neuron=neuron, hook=model.hook(layer), max_activation=max_act,
        trie=trie, matching=matching, examples=sorted(examples, key=lambda e: -e.activation),
        pruned=pruned,
        build={"config": config.to_dict(), "snippets": len(items),
               "augmented": sum(s.parent >= 0 for s, _ in items), "per_neuron": cost},
    )

    def top(rows: np.ndarray) -> list[Window]:
        return [Window([vocab[t] for t in windows[layer_scan.windows[j, neuron]]],
                       layer_scan.traces[j, neuron] / max_act) for j in rows]

    negatives = [Window([vocab[t] for t in windows[w]], layer_scan.random_traces[i, :, neuron] / max_act)
                 for i, w in enumerate(layer_scan.random_windows)]
    # Scored through the record itself, so the figures are those of the graph as stored.
    graph.fidelity = evaluate(graph.predict, top(train), top(test), negatives, config.eval.ngram)
    return graph


def build_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig, helper: Helper | None) -> list[NeuronGraph]:
    """Build the graphs of some neurons of one layer, sharing forward passes between them."""
    started, forwarded = time.perf_counter(), model.tokens_forwarded
    k = layer_scan.values.shape[0]
    live, top, splits = [], [], {}
    graphs: dict[int, NeuronGraph] = {}
    for n in neurons:
        max_act = float(layer_scan.max_activation[n])
        if not np.isfinite(max_act) or max_act <= 0:
            graphs[n] = _dead_graph(model, layer, n, max_act, config)
            continue
        live.append(n)
        train, test = split(k, config.eval.train, config.seed, layer, n)
        splits[n] = (train, test)
        for j in train:
            window = windows[layer_scan.windows[j, n]].tolist()
            trace = layer_scan.traces[j, n]
            top += [TopExample(n, window, p, float(trace[p]))
                    for p in _pivots(trace, max_act, config)]

    mtok = config.max_batch_tokens
    mask = _mask_id(model, config)
    pruned = prune(model, layer, top, config.prune, mtok)
    importance, acts = saliency(model, layer, pruned, mask, mtok)
    pruned = [Snippet(s.neuron, s.tokens, float(a)) for s, a in zip(pruned, acts, strict=True)]
    variants = augment(model, layer, pruned, importance, helper, config.augment, mtok)
    variants, variant_importance = _measure_variants(model, layer, pruned, importance, variants,
                                                     mask, config)
    by_neuron: dict[int, list[tuple[Snippet, np.ndarray]]] = {n: [] for n in live}
    for s, imp in zip(pruned + variants, importance + variant_importance, strict=True):
        by_neuron[s.neuron].append((s, imp))
    matching = Matching(rule=config.fit.rule, normalized=config.fit.normalized)
    elapsed = time.perf_counter() - started
    per_neuron: dict[str, float] = {
        "seconds": round(elapsed / max(1, len(neurons)), 3),
        "tokens_forwarded": (model.tokens_forwarded - forwarded) // max(1, len(neurons)),
    }

    for n in live:
        graphs[n] = _neuron_graph(model, layer, n, by_neuron[n], layer_scan, windows, splits[n],
                                  matching, config, per_neuron)
    return [graphs[n] for n in neurons]


def build_layer(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig, writer: StoreWriter | None = None,
                progress: Progress | None = None,
                cancel: threading.Event | None = None) -> list[NeuronGraph]:
    """Build neurons of one layer batch by batch, appending each batch to ``writer``.

    Raises:
        Cancelled: when ``cancel`` is set; the batches finished before it are kept.
    """
    for n in neurons:
        model.check_neuron(n)
    built: list[NeuronGraph] = []
    helper = make_helper(config.augment.helper, model, config.max_batch_tokens)
    bar = tqdm(total=len(neurons), unit="neuron", desc=f"layer {layer}", disable=progress is not None)
    for start in range(0, len(neurons), config.neuron_batch):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {len(built)} of {len(neurons)} neurons of layer {layer}")
        batch = list(neurons[start:start + config.neuron_batch])
        graphs = build_batch(model, layer, batch, layer_scan, windows, config, helper)
        if writer is not None:
            writer.append(graphs)
        built.extend(graphs)
        bar.update(len(batch))
        if progress is not None:
            progress(len(built), len(neurons), f"built {len(built)}/{len(neurons)} neurons of layer {layer}")
    bar.close()
    return built


def build(model: LoadedModel, layers: Sequence[int], neurons: Sequence[int] | None,
          store_path: Path | None, config: BuildConfig, corpus: str | Path | None = None,
          rebuild: bool = False, progress: Progress | None = None,
          cancel: threading.Event | None = None) -> list[NeuronGraph]:
    """Scan once for all layers, then build the requested neurons of each layer into a store.

    Args:
        model: the loaded model.
        layers: layers to build.
        neurons: neuron indices (None: every neuron of each layer).
        store_path: the ``.jsonl`` store to append to (None: build without storing).
        config: stage settings.
        corpus: corpus source (None: the embedded default).
        rebuild: build neurons already in the store again (the newer line wins on read).
        progress: ``progress(done, total, message)``; without it tqdm bars are shown.
        cancel: set it to stop between batches.

    Raises:
        store.jsonl.StoreLocked: if another writer holds the store.
    """
    for layer in layers:
        model.check_layer(layer)
    todo_neurons = list(range(model.d_mlp)) if neurons is None else list(neurons)
    for n in todo_neurons:
        model.check_neuron(n)
    shape = (model.n_layers, model.d_mlp)
    # The writer locks the store for the whole build and repairs a torn tail before it is read.
    writer = StoreWriter(store_path, model.name, shape) if store_path is not None else None
    try:
        done: set[tuple[int, int]] = set()
        if writer is not None and not rebuild:
            done = set(read_store(store_path, shape).graphs)
        todo = {layer: [n for n in todo_neurons if (layer, n) not in done] for layer in layers}
        if not any(todo.values()):
            log.info("every requested neuron is already in %s", store_path)
            return []

        windows = make_windows(model, corpus, config.scan.window, config.scan.max_tokens)
        scans = scan(model, windows, [layer for layer in layers if todo[layer]], config.scan,
                     progress=progress)
        built: list[NeuronGraph] = []
        for layer in layers:
            if todo[layer]:
                built += build_layer(model, layer, todo[layer], scans[layer], windows, config,
                                     writer, progress, cancel)
        return built
    finally:
        if writer is not None:
            writer.close()
