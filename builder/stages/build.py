"""The N2G stages in order, for many neurons of one layer at once.

    (layer scan) -> split -> prune -> saliency -> augment (new pivots pruned and measured again)
                 -> fit -> evaluate -> (store)

Neurons are taken ``neuron_batch`` at a time; every stage of a batch shares its forward passes
across the batch's neurons, and :func:`build_layer` appends each finished batch to the store's
writer in one write. Which neurons to build, the scans and the store come from the runner
(``builder.run.runner``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from builder.stages.augment import Helper, augment, make_helper
from builder.config import BuildConfig, EvalConfig
from builder.stages.evaluate import Window, evaluate, short_rows
from builder.stages.fit import TrainText, fit
from builder.forward import neuron_activations, run_layers
from builder.probes.induction import repeated_sequences
from builder.models import LoadedModel
from builder.probes.tokens import TokenProbe, probe_tokens
from builder.stages.prune import Snippet, TopExample, prune
from builder.stages.saliency import saliency
from builder.stages.scan import LayerScan
from store.errors import BadArgument, Cancelled
from store.examples import EXAMPLE_AFTER, EXAMPLE_BEFORE, Referrer
from store.graph import Example, Matching, NeuronGraph, graph_record
from store.jsonl import StoreWriter
from store.metrics import FIRING_THRESHOLD
from store.progress import Progress
from store.trie import NeuronTrie

log = logging.getLogger(__name__)



def split(k: int, config: EvalConfig, seed: int, layer: int,
          neuron: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test ranks (0-based) of a neuron's ``k`` top windows, reproducible per neuron.

    The paper's top ``config.top`` are split at random, ``config.train`` to train and the rest to
    test; ranks below them (up to ``config.extra_train`` of them) join train. The test half
    depends on the seed, layer and neuron only, never on how many extra windows there are.

    >>> from builder.config import EvalConfig
    >>> train, test = split(50, EvalConfig(), 0, 3, 7)
    >>> len(train), len(test), sorted(set(train) | set(test)) == list(range(50))
    (40, 10, True)
    >>> (split(20, EvalConfig(), 0, 3, 7)[1] == test).all()
    np.True_
    """
    top = min(config.top, k)
    order = np.random.default_rng([seed, layer, neuron]).permutation(top)
    extra = np.arange(top, min(k, top + config.extra_train))
    return np.concatenate([np.sort(order[:config.train]), extra]), np.sort(order[config.train:])


def _mask_id(model: LoadedModel, config: BuildConfig) -> int:
    token = config.saliency.mask_token
    if token is None:
        return model.mask_id
    ids = model.tokenizer.convert_tokens_to_ids([token])
    unknown = ids and ids[0] == model.tokenizer.unk_token_id and token != model.tokenizer.unk_token
    if not ids or ids[0] is None or unknown:
        raise BadArgument(f"mask token {token!r} is not a single token of {model.name}")
    return int(ids[0])


def _pivots(traces: np.ndarray, max_act: float, config: BuildConfig) -> list[tuple[int, int]]:
    """``(window, position)`` of the examples of one neuron, from its train windows' traces
    ``(windows, pos)`` in rank order (see ``ExampleConfig``): each window's argmax first, in rank
    order, then the other firing tokens, strongest first; at most ``max_pivots``."""
    argmax = [(j, int(np.argmax(t))) for j, t in enumerate(traces) if t.max() > 0]
    others: list[tuple[int, int]] = []
    if config.examples.pivots == "firing":
        firing = np.argwhere(traces >= config.examples.firing * max_act)  # (n, 2): window, pos
        chosen = set(argmax)
        others = sorted((p for p in map(tuple, firing.tolist()) if p not in chosen),
                        key=lambda p: -traces[p])
    pivots = argmax + others
    cap = config.examples.max_pivots
    return pivots if cap is None else pivots[:cap]


def _distinct(snippets: Sequence[Snippet]) -> list[Snippet]:
    """One snippet per (neuron, text): pivots whose pruned texts coincide are measured once, and
    the one standing for the strongest full example is kept."""
    best: dict[tuple[int, tuple[int, ...]], Snippet] = {}
    for s in snippets:
        key = (s.neuron, s.tokens)
        if key not in best or s.full_activation > best[key].full_activation:
            best[key] = s
    return list(best.values())


def _calibration_windows(model: LoadedModel, layer: int, layer_scan: LayerScan, windows: np.ndarray,
                         config: BuildConfig) -> tuple[np.ndarray, np.ndarray]:
    """Random corpus windows for calibration, never the evaluation's random windows, and every
    neuron's activations on them: ``(ids (r,), acts (r, window, d_mlp))``. One forward pass for
    all neurons of the layer."""
    r = config.fit.negatives if config.fit.calibrate else 0
    pool = np.setdiff1d(np.arange(len(windows)), layer_scan.random_windows)
    r = min(r, len(pool))
    if r == 0:
        return np.zeros(0, np.int64), np.zeros((0, windows.shape[1], model.d_mlp), np.float32)
    ids = np.sort(np.random.default_rng([config.seed, layer, 1]).choice(pool, r, replace=False))
    acts = run_layers(model, windows[ids].tolist(), [layer])[layer]  # (r, window, d_mlp)
    return ids, acts.cpu().numpy()


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
    is pruned and measured afresh (or, with ``augment.new_pivot = "inherit"``, it is treated like
    a context variant).
    """
    mtok = config.max_batch_tokens
    new_pivot = [v.tokens[-1] != originals[v.parent].tokens[-1]
                 and config.augment.new_pivot == "remeasure" for v in variants]
    fresh = prune(model, layer, [TopExample(v.neuron, v.tokens, len(v.tokens) - 1, v.activation)
                                 for v, new in zip(variants, new_pivot, strict=True) if new],
                  config.prune, mtok)
    fresh_iter = iter(fresh)
    out = []
    for v, new in zip(variants, new_pivot, strict=True):
        if new:  # pruned again: its scale now runs from the new text to the original full example
            f = next(fresh_iter)
            v = replace(v, tokens=f.tokens, scale=v.scale * f.scale)
        out.append(v)
    imps = [importance[v.parent] for v in out]
    remeasure = [i for i, new in enumerate(new_pivot) if new or config.augment.saliency == "recompute"]
    measured, acts = saliency(model, layer, [out[i] for i in remeasure], mask, mtok,
                              config.saliency.context)
    for i, imp, act in zip(remeasure, measured, acts, strict=True):
        imps[i] = imp
        out[i] = replace(out[i], activation=float(act))
    return out, imps


def top_windows(vocab: Sequence[str], windows: np.ndarray, layer_scan: LayerScan, neuron: int,
                ranks: Sequence[int]) -> list[Window]:
    """A neuron's top windows of the given ranks, as token strings with its normalised activations."""
    max_act = float(layer_scan.max_activation[neuron])
    return [Window([vocab[t] for t in windows[layer_scan.windows[j, neuron]]],
                   layer_scan.traces[j, neuron] / max_act) for j in ranks]


def _neuron_graph(model: LoadedModel, layer: int, neuron: int,
                  items: Sequence[tuple[Snippet, np.ndarray]], layer_scan: LayerScan,
                  windows: np.ndarray, halves: tuple[np.ndarray, np.ndarray], matching: Matching,
                  calibration: tuple[np.ndarray, np.ndarray], probe: TokenProbe | None,
                  config: BuildConfig, cost: dict[str, float],
                  short_texts: Sequence[tuple[list[int], np.ndarray]] = (),
                  repeats: tuple[list[list[str]], np.ndarray] | None = None) -> NeuronGraph:
    """Fit one neuron's graph from its snippets, then score the stored graph on held-out text."""
    vocab = model.vocab
    max_act = float(layer_scan.max_activation[neuron])
    train, test = halves

    def text(window: int, trace: np.ndarray) -> TrainText:
        return TrainText([vocab[t] for t in windows[window]], trace / max_act)

    train_top = [text(layer_scan.windows[j, neuron], layer_scan.traces[j, neuron]) for j in train]
    # A calibration window that is one of this neuron's test windows would leak the test set.
    held_out = {int(layer_scan.windows[j, neuron]) for j in test}
    negatives = [text(w, calibration[1][i, :, neuron]) for i, w in enumerate(calibration[0])
                 if int(w) not in held_out]
    level = [(s.full_activation if config.fit.scale else s.activation) / max_act for s, _ in items]
    firing = sorted({t for x in train_top for t, a in zip(x.tokens, x.activations, strict=True)
                     if a >= FIRING_THRESHOLD})
    trie = fit([[vocab[t] for t in s.tokens] for s, _ in items], [imp for _, imp in items],
               level, config.fit, train_top + negatives, firing,
               [] if probe is None else [(vocab[t], v) for t, v in
                                         probe.firing(neuron, max_act, FIRING_THRESHOLD)],
               [] if repeats is None else [TrainText(tokens, repeats[1][i, :, neuron] / max_act)
                                           for i, tokens in enumerate(repeats[0])])
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
    # A graph that predicts no firing on the very windows it was built from explains nothing:
    # say so in the record rather than let its zeros pass for a finding.
    graph.unexplained = not any(p >= FIRING_THRESHOLD for t in train_top for p in graph.predict(list(t.tokens)))

    negatives = [Window([vocab[t] for t in windows[w]], layer_scan.random_traces[i, :, neuron] / max_act)
                 for i, w in enumerate(layer_scan.random_windows)]
    # Scored through the record itself, so the figures are those of the graph as stored.
    short = [Window([vocab[t] for t in ids], acts / max_act) for ids, acts in short_texts] \
        if short_texts else None
    graph.fidelity = evaluate(graph.predict, top_windows(vocab, windows, layer_scan, neuron, train),
                              top_windows(vocab, windows, layer_scan, neuron, test), negatives,
                              config.eval.ngram, short)
    return graph


@dataclass
class Measured:
    """What the model-facing stages (prune, saliency, augment) made of one batch of neurons:
    everything the fit needs, so that fit settings can be compared without new forward passes."""

    snippets: dict[int, list[tuple[Snippet, np.ndarray]]]
    """Per live neuron, its snippets (pruned and augmented) with their importances."""
    dead: list[int]
    """Neurons that never fire in the corpus."""
    calibration: tuple[np.ndarray, np.ndarray]
    """Random calibration windows and every neuron's activations on them."""
    probe: TokenProbe | None
    cost: dict[str, float]
    """Seconds and tokens forwarded per neuron (the stages), and tokens of the short-text evaluation."""
    short: dict[int, list[tuple[list[int], np.ndarray]]] = field(default_factory=dict)
    """Per live neuron, its short test texts (token ids) and raw activations on them."""
    repeats: tuple[list[list[str]], np.ndarray] | None = None
    """The repeated-sequence probe's token strings and the layer's activations on them
    ``(sequences, pos, d_mlp)`` (:func:`repeat_probe`), where the fit judges repeat paths."""


REPEAT_PROBE_SEED = 7
"""Seed of the sequences repeat paths are judged on: not ``find_induction_neurons``' default
(0), so a graph is never scored on the very sequences that ranked its neuron."""
REPEAT_PROBE_LENGTH = 48
"""Words a sequence before its copy (the probe's default)."""


def repeat_probe(model: LoadedModel, layer: int,
                 config: BuildConfig) -> tuple[list[list[str]], np.ndarray] | None:
    """The repeated sequences and the layer's activations on them, where the fit asks for them
    (``FitConfig.repeat_probe``); None for a vocabulary with too few plain words."""
    fit_config = config.fit
    if not (fit_config.calibrate and fit_config.repeats and fit_config.repeat_probe > 0):
        return None
    try:
        rows = repeated_sequences(model, fit_config.repeat_probe, REPEAT_PROBE_LENGTH, REPEAT_PROBE_SEED)
    except ValueError:
        return None
    acts = run_layers(model, rows.tolist(), [layer])[layer].cpu().numpy()  # (sequences, pos, d_mlp)
    return [[model.vocab[t] for t in row] for row in rows], acts


def check_regime(model: LoadedModel, config: BuildConfig) -> None:
    """Raise BadArgument where the model runs in another numeric type than the config names: the
    build record would then misstate how its graphs were made."""
    if model.dtype != config.dtype:
        raise BadArgument(f"{model.name} is loaded in {model.dtype} but the build asks for "
                         f"{config.dtype}; load it with load_model(..., dtype={config.dtype!r}) "
                         f"or build with dtype={model.dtype!r}")


def measure_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                  windows: np.ndarray, config: BuildConfig, helper: Helper | None,
                  probe: TokenProbe | None = None,
                  calibration: tuple[np.ndarray, np.ndarray] | None = None) -> Measured:
    """Prune, measure and augment the examples of some neurons of one layer, sharing forward
    passes between them. ``probe`` is the layer's token probe, if it has one (made once per
    layer by :func:`layer_probe`); ``calibration`` the layer's calibration windows (made once
    per layer by :func:`build_layer`; None: made here, and charged to these neurons)."""
    check_regime(model, config)
    started, forwarded = time.perf_counter(), model.tokens_forwarded
    k = layer_scan.values.shape[0]
    live, dead, top = [], [], []
    pivot_windows = config.examples.windows
    for n in neurons:
        max_act = float(layer_scan.max_activation[n])
        if not np.isfinite(max_act) or max_act <= 0:
            dead.append(n)
            continue
        live.append(n)
        train, _ = split(k, config.eval, config.seed, layer, n)
        ranks = train if pivot_windows is None else train[:pivot_windows]
        traces = layer_scan.traces[ranks, n]  # (windows, pos)
        for j, p in _pivots(traces, max_act, config):
            window = windows[layer_scan.windows[ranks[j], n]].tolist()
            top.append(TopExample(n, window, p, float(traces[j, p])))

    mtok = config.max_batch_tokens
    mask = _mask_id(model, config)
    pruned = _distinct(prune(model, layer, top, config.prune, mtok))
    importance, acts = saliency(model, layer, pruned, mask, mtok, config.saliency.context)
    pruned = [replace(s, activation=float(a)) for s, a in zip(pruned, acts, strict=True)]
    variants = augment(model, layer, pruned, importance, helper, config.augment, mtok,
                       fold=config.fit.normalized)
    variants, variant_importance = _measure_variants(model, layer, pruned, importance, variants,
                                                     mask, config)
    by_neuron: dict[int, list[tuple[Snippet, np.ndarray]]] = {n: [] for n in live}
    for s, imp in zip(pruned + variants, importance + variant_importance, strict=True):
        by_neuron[s.neuron].append((s, imp))
    if calibration is None:
        calibration = _calibration_windows(model, layer, layer_scan, windows, config)
    repeats = repeat_probe(model, layer, config) if live else None
    elapsed = time.perf_counter() - started
    cost: dict[str, float] = {
        "seconds": round(elapsed / max(1, len(neurons)), 3),
        "tokens_forwarded": (model.tokens_forwarded - forwarded) // max(1, len(neurons)),
    }
    forwarded = model.tokens_forwarded
    short = _short_texts(model, layer, live, layer_scan, windows, config)
    cost["eval_tokens_forwarded"] = (model.tokens_forwarded - forwarded) // max(1, len(neurons))
    return Measured(snippets=by_neuron, dead=dead, calibration=calibration, probe=probe, cost=cost,
                    short=short, repeats=repeats)


def _short_texts(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                 windows: np.ndarray, config: BuildConfig) -> dict[int, list[tuple[list[int], np.ndarray]]]:
    """Per neuron, its test windows cut short around their pivots (``EvalConfig.short_before`` /
    ``short_after``) with its raw activations measured again on each cut text; one batched pass
    for all the neurons. Empty where the protocol is off."""
    ev = config.eval
    if ev.short_before == 0 and ev.short_after == 0:
        return {}
    k = layer_scan.values.shape[0]
    rows, owners = [], []
    for n in neurons:
        for j in split(k, ev, config.seed, layer, n)[1]:
            trace = layer_scan.traces[j, n]  # (pos,)
            window = windows[layer_scan.windows[j, n]].tolist()
            rows.append(short_rows(window, int(np.argmax(trace)), ev.short_before, ev.short_after))
            owners.append(n)
    acts = neuron_activations(model, layer, rows, owners, config.max_batch_tokens)
    out: dict[int, list[tuple[list[int], np.ndarray]]] = {n: [] for n in neurons}
    for n, row, a in zip(owners, rows, acts, strict=True):
        out[n].append((list(row), a))
    return out


def layer_probe(model: LoadedModel, layer: int, windows: np.ndarray,
                config: BuildConfig) -> TokenProbe | None:
    """The token probe of a layer where the config asks for one (``FitConfig.probe_layers``)."""
    if not config.fit.calibrate or layer >= config.fit.probe_layers:
        return None
    return probe_tokens(model, layer, np.unique(windows).tolist())


def fit_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
              windows: np.ndarray, config: BuildConfig, measured: Measured) -> list[NeuronGraph]:
    """Fit and score the graphs of a measured batch (no forward pass)."""
    k = layer_scan.values.shape[0]
    matching = Matching(rule=config.fit.rule, normalized=config.fit.normalized)
    graphs = {n: _dead_graph(model, layer, n, float(layer_scan.max_activation[n]), config)
              for n in measured.dead}
    for n, items in measured.snippets.items():
        graphs[n] = _neuron_graph(model, layer, n, items, layer_scan, windows,
                                  split(k, config.eval, config.seed, layer, n), matching,
                                  measured.calibration, measured.probe, config, measured.cost,
                                  measured.short.get(n, ()), measured.repeats)
    return [graphs[n] for n in neurons]


def build_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig, helper: Helper | None,
                probe: TokenProbe | None = None,
                calibration: tuple[np.ndarray, np.ndarray] | None = None) -> list[NeuronGraph]:
    """Build the graphs of some neurons of one layer, sharing forward passes between them."""
    measured = measure_batch(model, layer, neurons, layer_scan, windows, config, helper, probe,
                             calibration)
    return fit_batch(model, layer, neurons, layer_scan, windows, config, measured)


def stored_form(graphs: Sequence[NeuronGraph], layer_scan: LayerScan,
                referrer: Referrer | None) -> list[NeuronGraph]:
    """The graphs as a store writes them: with a ``referrer`` (the build's windows are its scan
    file's), their examples as references into the scan, found first among each neuron's own top
    windows; else as they are (text)."""
    if referrer is None:
        return list(graphs)
    out = []
    for graph in graphs:
        examples, pruned, _ = referrer.refer(graph.examples, graph.pruned, layer_scan.windows[:, graph.neuron])
        out.append(graph.model_copy(update={"examples": examples, "pruned": pruned}))
    return out


def build_layer(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig, writer: StoreWriter | None = None,
                progress: Progress | None = None,
                cancel: threading.Event | None = None,
                referrer: Referrer | None = None) -> list[NeuronGraph]:
    """Build neurons of one layer batch by batch, appending each batch to ``writer``.

    ``referrer`` (a scan file serving ``windows``, which the writer's store names) makes the
    stored examples references into it (store format 2); the graphs returned keep their text.

    Raises:
        Cancelled: when ``cancel`` is set; the batches finished before it are kept.
    """
    for n in neurons:
        model.check_neuron(n)
    check_regime(model, config)
    built: list[NeuronGraph] = []
    helper = make_helper(config.augment.helper, model, config.max_batch_tokens)
    # Passes that serve every neuron of the layer run once, not once per batch.
    probe = layer_probe(model, layer, windows, config)
    calibration = _calibration_windows(model, layer, layer_scan, windows, config)
    bar = tqdm(total=len(neurons), unit="neuron", desc=f"layer {layer}", disable=progress is not None)
    for start in range(0, len(neurons), config.neuron_batch):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {len(built)} of {len(neurons)} neurons of layer {layer}")
        batch = list(neurons[start:start + config.neuron_batch])
        graphs = build_batch(model, layer, batch, layer_scan, windows, config, helper, probe,
                             calibration)
        if writer is not None:
            writer.append(stored_form(graphs, layer_scan, referrer))
        built.extend(graphs)
        bar.update(len(batch))
        if progress is not None:
            progress(len(built), len(neurons), f"built {len(built)}/{len(neurons)} neurons of layer {layer}")
    bar.close()
    return built

