"""The N2G stages in order, for many neurons of one layer at once.

    (layer scan) -> examples -> prune -> saliency -> augment (variants measured in turn)
                 -> fit (on the calibration evidence) -> evaluate -> (store)

:func:`measure_batch` runs the stages that need the model (examples to augment, and the short
texts the evaluation measures again) for a batch of neurons into one :class:`Measured` record;
:func:`fit_batch` fits and scores each neuron's graph from it with no forward pass, so fit
settings can be compared on one measurement. Neurons are taken ``neuron_batch`` at a time; every
stage of a batch shares its forward passes across the batch's neurons, and :func:`build_layer`
appends each finished batch to the store's writer in one write. Which neurons to build, the
scans and the store come from the runner (``builder.run.runner``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from builder.config import BuildConfig
from builder.models import LoadedModel
from builder.probes.tokens import TokenProbe
from builder.stages.augment import Helper, augment, make_helper, measure_variants
from builder.stages.calibration import (
    Calibration,
    RepeatProbe,
    calibration_windows,
    layer_probe,
    repeat_probe,
)
from builder.stages.evaluate import ShortText, Window, evaluate, short_texts
from builder.stages.examples import neuron_split, top_examples
from builder.stages.fit import FitSnippet, TrainText, fit
from builder.stages.ordinary import CorpusSplit, OrdinaryText, calibrated, heldout_fidelity, ordinary_texts
from builder.stages.prune import Snippet, distinct, prune
from builder.stages.saliency import mask_token_id, saliency
from builder.stages.scan import LayerScan
from store.errors import BadArgument, Cancelled
from store.examples import EXAMPLE_AFTER, EXAMPLE_BEFORE, Referrer
from store.graph import Example, Matching, NeuronGraph, graph_record
from store.jsonl import StoreWriter
from store.metrics import FIRING_THRESHOLD
from store.progress import Progress
from store.trie import NeuronTrie

log = logging.getLogger(__name__)


@dataclass
class Measured:
    """What the model-facing stages (prune, saliency, augment) made of one batch of neurons:
    everything the fit needs, so that fit settings can be compared without new forward passes."""

    snippets: dict[int, list[Snippet]]
    """Per live neuron, its snippets (pruned and augmented), each with its importances."""
    dead: list[int]
    """Neurons that never fire in the corpus."""
    calibration: Calibration
    """Random calibration windows and every neuron's activations on them."""
    probe: TokenProbe | None
    cost: dict[str, float]
    """Seconds and tokens forwarded per neuron (the stages), and tokens of the short-text evaluation."""
    short: dict[int, list[ShortText]] = field(default_factory=dict)
    """Per live neuron, its short test texts and raw activations on them."""
    repeats: RepeatProbe | None = None
    """The repeated-sequence probe's texts and the layer's activations on them, where the fit
    judges repeat paths."""
    ordinary: OrdinaryText | None = None
    """The layer's ordinary-text evidence, where the build calibrates on it (``BuildConfig.ordinary``)."""
    reused: Mapping[int, NeuronGraph] = field(default_factory=dict)
    """Per neuron, a stored graph whose fitted paths it keeps (``n2g build --paths-from``): its
    examples are not pruned, measured or fitted again, only calibrated and scored."""


def check_regime(model: LoadedModel, config: BuildConfig) -> None:
    """Raise BadArgument where the model runs in another numeric type than the config names: the
    build record would then misstate how its graphs were made."""
    if model.dtype != config.dtype:
        raise BadArgument(f"{model.name} is loaded in {model.dtype} but the build asks for "
                         f"{config.dtype}; load it with load_model(..., dtype={config.dtype!r}) "
                         f"or build with dtype={model.dtype!r}")


def measure_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                  windows: np.ndarray, config: BuildConfig, helper: Helper | None,
                  probe: TokenProbe | None = None, calibration: Calibration | None = None,
                  ordinary: OrdinaryText | None = None, reused: Mapping[int, NeuronGraph] | None = None) -> Measured:
    """Prune, measure and augment the examples of some neurons of one layer, sharing forward
    passes between them. ``probe`` is the layer's token probe, if it has one (made once per
    layer by :func:`~builder.stages.calibration.layer_probe`); ``calibration`` the layer's
    calibration windows (made once per layer by :func:`build_layer`; None: made here, and charged
    to these neurons); ``ordinary`` the layer's ordinary-text evidence (:func:`build_layer`);
    ``reused`` the neurons whose fitted paths come from stored graphs (none of them is pruned,
    measured or fitted here)."""
    reused = {n: g for n, g in (reused or {}).items() if n in neurons}
    check_regime(model, config)
    started, forwarded = time.perf_counter(), model.tokens_forwarded
    live, dead, top = [], [], []
    for n in neurons:
        max_act = float(layer_scan.max_activation[n])
        if not np.isfinite(max_act) or max_act <= 0:
            dead.append(n)
            continue
        live.append(n)
        if n not in reused:
            top.extend(top_examples(layer_scan, windows, config, layer, n))

    mtok = config.max_batch_tokens
    mask = mask_token_id(model, config.saliency.mask_token)
    pruned = distinct(prune(model, layer, top, config.prune, mtok))
    measured = saliency(model, layer, pruned, mask, mtok, config.saliency.context)
    pruned = [s.measured(m) for s, m in zip(pruned, measured, strict=True)]
    variants = augment(model, layer, pruned, helper, config.augment, mtok, fold=config.fit.normalized)
    variants = measure_variants(model, layer, pruned, variants, mask, config)
    by_neuron: dict[int, list[Snippet]] = {n: [] for n in live}
    for s in pruned + variants:
        by_neuron[s.neuron].append(s)
    if calibration is None:
        calibration = calibration_windows(model, layer, layer_scan, windows, config)
    repeats = repeat_probe(model, layer, config) if set(live) - set(reused) else None  # the fit's only
    elapsed = time.perf_counter() - started
    cost: dict[str, float] = {
        "seconds": round(elapsed / max(1, len(neurons)), 3),
        "tokens_forwarded": (model.tokens_forwarded - forwarded) // max(1, len(neurons)),
    }
    forwarded = model.tokens_forwarded
    short = short_texts(model, layer, live, layer_scan, windows, config)
    cost["eval_tokens_forwarded"] = (model.tokens_forwarded - forwarded) // max(1, len(neurons))
    return Measured(snippets=by_neuron, dead=dead, calibration=calibration, probe=probe, cost=cost,
                    short=short, repeats=repeats, ordinary=ordinary, reused=reused)


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
                        units=model.units_name, max_activation=finite, trie=NeuronTrie(), matching=Matching(),
                        build={"config": config.to_dict(), "dead": True})


def top_windows(vocab: Sequence[str], windows: np.ndarray, layer_scan: LayerScan, neuron: int,
                ranks: Sequence[int]) -> list[Window]:
    """A neuron's top windows of the given ranks, as token strings with its normalised activations."""
    max_act = float(layer_scan.max_activation[neuron])
    return [Window([vocab[t] for t in windows[layer_scan.windows[j, neuron]]],
                   layer_scan.traces[j, neuron] / max_act) for j in ranks]


def neuron_graph(model: LoadedModel, layer: int, neuron: int, layer_scan: LayerScan,
                 windows: np.ndarray, config: BuildConfig, measured: Measured,
                 matching: Matching) -> NeuronGraph:
    """Fit one live neuron's graph from its measured snippets, then score the stored graph on
    held-out text."""
    vocab = model.vocab
    max_act = float(layer_scan.max_activation[neuron])
    snippets = measured.snippets[neuron]
    train, test = neuron_split(layer_scan, config, layer, neuron)

    def text(window: int, trace: np.ndarray) -> TrainText:
        return TrainText([vocab[t] for t in windows[window]], trace / max_act)

    train_top = [text(layer_scan.windows[j, neuron], layer_scan.traces[j, neuron]) for j in train]
    # A calibration window that is one of this neuron's test windows would leak the test set.
    held_out = {int(layer_scan.windows[j, neuron]) for j in test}
    calibration = measured.calibration
    negatives = [text(w, calibration.activations[i, :, neuron]) for i, w in enumerate(calibration.windows)
                 if int(w) not in held_out]
    firing = sorted({t for x in train_top for t, a in zip(x.tokens, x.activations, strict=True)
                     if a >= FIRING_THRESHOLD})
    probed = [] if measured.probe is None else [
        (vocab[t], v) for t, v in measured.probe.firing(neuron, max_act, FIRING_THRESHOLD)]
    repeats = measured.repeats
    repeat_texts = [] if repeats is None else [TrainText(tokens, repeats.activations[i, :, neuron] / max_act)
                                               for i, tokens in enumerate(repeats.tokens)]
    paths = [FitSnippet([vocab[t] for t in s.tokens], s.importances,
                        (s.full_activation if config.fit.scale else s.activation) / max_act)
             for s in snippets]
    prior = measured.reused.get(neuron)
    trie = fit(paths, config.fit, train_top + negatives, firing, probed, repeat_texts) if prior is None \
        else prior.graph
    ordinary = measured.ordinary
    if ordinary is not None:  # ENDs from ordinary text, the neuron's test windows left out
        trie, default = calibrated(trie, neuron, max_act, layer_scan.windows[test, neuron], ordinary,
                                   config.ordinary)
        matching = matching.model_copy(update={"rule": "specific", "default": round(default, 4)})
    examples = [_stored_example(model, windows[layer_scan.windows[j, neuron]], layer_scan.traces[j, neuron], name)
                for name, part in (("train", train), ("test", test)) for j in part]
    pruned = [Example(tokens=[vocab[t] for t in s.tokens], pivot=len(s.tokens) - 1,
                      activation=round(s.activation, 4), split="train",
                      importances=[round(float(v), 3) for v in s.importances])
              for s in snippets if s.parent < 0] if prior is None else list(prior.pruned)
    origin = {"snippets": len(snippets), "augmented": sum(s.parent >= 0 for s in snippets)} if prior is None else \
        {"snippets": prior.build.get("snippets"), "augmented": prior.build.get("augmented"),
         "paths_from": {"config": prior.build.get("config")}}  # how the kept paths were made
    graph = graph_record(
        model=model.name, layer=layer, neuron=neuron, hook=model.hook(layer), units=model.units_name,
        max_activation=max_act, trie=trie, matching=matching, examples=sorted(examples, key=lambda e: -e.activation),
        pruned=pruned,
        build={"config": config.to_dict(), **origin,
               "per_neuron": measured.cost if ordinary is None else
               {**measured.cost, "ordinary_tokens_forwarded": ordinary.tokens_per_neuron}},
    )
    # A graph that predicts no firing on the very windows it was built from explains nothing:
    # say so in the record rather than let its zeros pass for a finding.
    graph.unexplained = not any(p >= FIRING_THRESHOLD for t in train_top for p in graph.predict(list(t.tokens)))

    negatives = [Window([vocab[t] for t in windows[w]], layer_scan.random_traces[i, :, neuron] / max_act)
                 for i, w in enumerate(layer_scan.random_windows)]
    # Scored through the record itself, so the figures are those of the graph as stored.
    cut = measured.short.get(neuron, ())
    short = [Window([vocab[t] for t in s.ids], s.activations / max_act) for s in cut] if cut else None
    graph.fidelity = evaluate(graph.predict, top_windows(vocab, windows, layer_scan, neuron, train),
                              top_windows(vocab, windows, layer_scan, neuron, test), negatives,
                              config.eval.ngram, short)
    if ordinary is not None:
        graph.fidelity.heldout = heldout_fidelity(graph.graph, graph.matching.default, neuron, max_act, ordinary)
    return graph


def fit_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
              windows: np.ndarray, config: BuildConfig, measured: Measured) -> list[NeuronGraph]:
    """Fit and score the graphs of a measured batch (no forward pass)."""
    matching = Matching(rule=config.fit.rule, normalized=config.fit.normalized)
    graphs = {n: _dead_graph(model, layer, n, float(layer_scan.max_activation[n]), config)
              for n in measured.dead}
    for n in measured.snippets:
        graphs[n] = neuron_graph(model, layer, n, layer_scan, windows, config, measured, matching)
    return [graphs[n] for n in neurons]


def build_batch(model: LoadedModel, layer: int, neurons: Sequence[int], layer_scan: LayerScan,
                windows: np.ndarray, config: BuildConfig, helper: Helper | None,
                probe: TokenProbe | None = None,
                calibration: Calibration | None = None,
                ordinary: OrdinaryText | None = None,
                reused: Mapping[int, NeuronGraph] | None = None) -> list[NeuronGraph]:
    """Build the graphs of some neurons of one layer, sharing forward passes between them
    (``reused``: see :func:`measure_batch`)."""
    measured = measure_batch(model, layer, neurons, layer_scan, windows, config, helper, probe,
                             calibration, ordinary, reused)
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
                referrer: Referrer | None = None,
                split: CorpusSplit | None = None,
                reused: Mapping[int, NeuronGraph] | None = None,
                ordinary: OrdinaryText | None = None) -> list[NeuronGraph]:
    """Build neurons of one layer batch by batch, appending each batch to ``writer``.

    ``referrer`` (a scan file serving ``windows``, which the writer's store names) makes the
    stored examples references into it (store format 2); the graphs returned keep their text.
    ``split`` says where the held-out documents are: the ordinary-text stage never calibrates
    on them and scores the graphs on them (None: the build's windows hold none, and no held-out
    fidelity is stored). ``reused``: per neuron, a stored graph whose fitted paths are kept and
    only calibrated on ordinary text and scored (``n2g build --paths-from``; needs
    ``config.ordinary.enabled``). ``ordinary``: the layer's ordinary-text evidence where the
    caller forwarded it already, with other layers' (made here where the build asks for it).

    Raises:
        Cancelled: when ``cancel`` is set; the batches finished before it are kept.
        BadArgument: where graphs are reused without the ordinary-text stage.
    """
    for n in neurons:
        model.check_neuron(n)
    check_regime(model, config)
    if reused and not config.ordinary.enabled:
        raise BadArgument("reusing stored graphs' paths only makes sense with the ordinary-text calibration "
                          "(--ordinary): without it the build would store the same graphs again")
    built: list[NeuronGraph] = []
    helper = make_helper(config.augment.helper, model, config.max_batch_tokens)
    # Passes that serve every neuron of the layer run once, not once per batch.
    probe = layer_probe(model, layer, windows, config)
    calibration = calibration_windows(model, layer, layer_scan, windows, config)
    if config.ordinary.enabled and ordinary is None:
        forwarded = model.tokens_forwarded
        if split is None:
            split = CorpusSplit(np.zeros(len(windows), dtype=bool), windows[:0])
        ordinary = ordinary_texts(model, [layer], windows, split, layer_scan.random_windows, config.ordinary,
                                  config.seed, config.fit.normalized, progress, cancel)[layer]
        ordinary = dataclasses.replace(ordinary, tokens_per_neuron=(model.tokens_forwarded - forwarded)
                                       // max(1, len(neurons)))
    bar = tqdm(total=len(neurons), unit="neuron", desc=f"layer {layer}", disable=progress is not None)
    for start in range(0, len(neurons), config.neuron_batch):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {len(built)} of {len(neurons)} neurons of layer {layer}")
        batch = list(neurons[start:start + config.neuron_batch])
        graphs = build_batch(model, layer, batch, layer_scan, windows, config, helper, probe,
                             calibration, ordinary, reused)
        if writer is not None:
            writer.append(stored_form(graphs, layer_scan, referrer))
        built.extend(graphs)
        bar.update(len(batch))
        if progress is not None:
            progress(len(built), len(neurons), f"built {len(built)}/{len(neurons)} neurons of layer {layer}")
    bar.close()
    return built

