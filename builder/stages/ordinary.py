"""Ordinary text in the build (issue 28): graphs calibrated on the corpus and scored on held-out text.

The fit learns paths from a neuron's top windows, where it fires far more often than in ordinary
text. With ``BuildConfig.ordinary.enabled``, every graph then passes through this stage:

1. :func:`ordinary_texts`: one forward pass over a uniform sample of build-split windows (and,
   for the fidelity, every held-out window), serving all the neurons of several layers;
2. :func:`calibrated`: the neuron's trie with ENDs from its matches in the sample
   (``builder.stages.corpus_calibration``), the neuron's own test windows left out so the paper's
   protocol stays honest, and the default the graph predicts where no path matches;
3. :func:`heldout_fidelity`: the graph and the token-lookup floor on every held-out token and on
   the interval protocol (``store.graph.HeldoutFidelity``).

Nothing here reads held-out text except the fidelity; no choice is made on it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from builder.config import OrdinaryConfig
from builder.models import LoadedModel
from builder.stages.corpus_calibration import CalibrationConfig, Sample, calibrate, default_value
from builder.stages.heldout import (
    CompiledGraph,
    TokenClasses,
    interval_windows,
    layer_activations,
    mean_lookup,
    predict_windows,
    repeat_runs,
    score_windows,
)
from store.graph import HeldoutFidelity, HeldoutScores, NeuronGraph
from store.progress import Progress
from store.trie import MatchRule, NeuronTrie

REPEAT_CAP = 8
"""How far repeat runs are counted on the sample: beyond any fitted repeat path's reach."""


@dataclass(frozen=True)
class CorpusSplit:
    """Where the held-out documents are, for a build over some corpus windows."""

    heldout: np.ndarray
    """``(n_windows,)`` bool: which of the build's windows come from held-out documents (none
    where the build reads the build split only), never calibrated on."""
    heldout_windows: np.ndarray
    """``(H, window)`` the held-out documents' windows, which the fidelity scores graphs on."""


def calibration_config(config: OrdinaryConfig) -> CalibrationConfig:
    """The corpus calibration that ``config`` names (``proposed_p0_500_200``: plain means, the
    neuron's sample mean as the default, token and bigram paths by variance explained)."""
    return CalibrationConfig(token_paths=True, default=True, token_delta=0.0, token_budget=config.token_paths,
                             bigram_paths=True, bigram_delta=config.bigram_delta,
                             bigram_budget=config.bigram_paths)


@dataclass(frozen=True)
class OrdinaryText:
    """A layer's ordinary-text evidence, raw activations of every neuron."""

    classes: TokenClasses
    sample_windows: np.ndarray
    """``(W,)`` indices into the build's windows of the calibration sample."""
    sample: Sample
    sample_acts: np.ndarray
    """``(W, P, d_mlp)`` float16."""
    heldout: Sample | None
    heldout_acts: np.ndarray | None
    """``(H, P, d_mlp)`` float16, or None when no fidelity is asked for."""
    tokens_per_neuron: int = 0
    """Tokens the pass forwarded, shared among the neurons it serves (the build sets it)."""


def sample_windows(n_windows: int, heldout: np.ndarray, exclude: np.ndarray, config: OrdinaryConfig,
                   seed: int) -> np.ndarray:
    """``config.windows`` build-split window indices at random (sorted, seeded), never held-out
    (``heldout``: ``(n_windows,)`` bool) and never in ``exclude`` (the evaluation's random windows).

    >>> sample_windows(10, np.arange(10) < 3, np.array([9]), OrdinaryConfig(windows=4), 0).tolist()
    [3, 4, 6, 8]
    """
    pool = np.setdiff1d(np.flatnonzero(~heldout), exclude)
    pick = np.random.default_rng([seed, 28]).choice(pool, min(config.windows, len(pool)), replace=False)
    return np.sort(pick)


def _sample(classes: TokenClasses, tokens: np.ndarray) -> Sample:
    """Token windows ``(W, P)`` as a calibration sample: their classes and repeat runs."""
    codes = classes.of_id[tokens]
    return Sample.of(codes, classes, repeat_runs(codes, REPEAT_CAP))


def ordinary_texts(model: LoadedModel, layers: Sequence[int], windows: np.ndarray, split: CorpusSplit,
                   exclude: np.ndarray, config: OrdinaryConfig, seed: int,
                   normalized: bool = False, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> dict[int, OrdinaryText]:
    """The sample of the build's ``windows`` (and the held-out windows when ``config.heldout``)
    forwarded once to the deepest of ``layers``, serving every neuron of each (memory: about
    0.6 GB a layer of 1,536 neurons at the default sample); ``normalized``: the graphs match folded
    tokens. The caller charges the pass to the neurons it builds (``tokens_per_neuron``).
    ``progress`` and ``cancel``: see :func:`builder.stages.heldout.layer_activations`."""
    classes = TokenClasses.of(model.vocab, normalized)
    ids = sample_windows(len(windows), split.heldout, exclude, config, seed)
    held = split.heldout_windows if config.heldout else split.heldout_windows[:0]
    acts = layer_activations(model, np.concatenate([windows[ids], held]), layers,  # {layer: (rows, P, d_mlp)}
                             progress=progress, cancel=cancel)
    sample, heldout = _sample(classes, windows[ids]).with_pairs(), _sample(classes, held) if len(held) else None
    return {layer: OrdinaryText(classes, ids, sample, a[:len(ids)], heldout, a[len(ids):] if len(held) else None)
            for layer, a in acts.items()}


def calibrated(trie: NeuronTrie, neuron: int, max_act: float, test_windows: np.ndarray, text: OrdinaryText,
               config: OrdinaryConfig) -> tuple[NeuronTrie, float]:
    """The neuron's trie calibrated on the sample, less its test windows, and its default."""
    keep = ~np.isin(text.sample_windows, test_windows)
    sample = text.sample.rows(keep)  # the class strings and pairs are the sample's, found once
    acts = text.sample_acts[keep, :, neuron].astype(np.float64) / max_act
    settings = calibration_config(config)
    return calibrate(trie, sample, acts, settings), default_value(acts, settings)


def heldout_fidelity(trie: NeuronTrie, default: float, neuron: int, max_act: float,
                     text: OrdinaryText, rule: MatchRule = "specific", column: int | None = None) -> HeldoutFidelity | None:
    """The graph (predicting by ``rule``, ``default`` where no path matches) and the floor on the
    held-out windows; None when the evidence has none. ``column``: where ``text``'s activations
    hold the neuron, if not at ``neuron`` (which also seeds the interval protocol's draw)."""
    column = neuron if column is None else column
    if text.heldout is None or text.heldout_acts is None or not len(text.heldout.codes):
        return None
    true = text.heldout_acts[:, :, column].astype(np.float64) / max_act
    codes = text.heldout.codes
    if rule == "greedy":  # the vectorised form follows every path; a greedy graph walks its own way
        strings = text.heldout.strings
        graph = np.array([trie.predict([strings[c] for c in row], rule, default) for row in codes])
    else:
        graph = predict_windows(CompiledGraph.of(trie, text.classes), codes, text.heldout.runs, rule, default)
    sample_acts = text.sample_acts[:, :, column].astype(np.float64)[:, :, None] / max_act
    floor = mean_lookup(text.sample.codes, sample_acts, len(text.classes))[:, 0][codes]
    pick = interval_windows(true, seed=neuron)

    def scores(predicted: np.ndarray) -> HeldoutScores:
        return HeldoutScores(tokens=score_windows(true, predicted), interval=score_windows(true[pick], predicted[pick]))

    return HeldoutFidelity(n2g=scores(graph), floor=scores(floor))


def score_stored(model: LoadedModel, graphs: Sequence[NeuronGraph], windows: np.ndarray, split: CorpusSplit,
                 exclude: np.ndarray, config: OrdinaryConfig, seed: int, layers_per_pass: int = 6,
                 progress: Progress | None = None, layers: Collection[int] | None = None) -> list[NeuronGraph]:
    """Stored graphs with ``fidelity.heldout`` set (``n2g eval --heldout``): each graph as it is
    (its own rule and default) and the token-lookup floor, on the held-out windows. One pass over
    the sample and the held-out windows serves ``layers_per_pass`` layers (memory: about 0.2 GB
    a layer of 1,536 neurons at the default sample); dead neurons' graphs, and those outside
    ``layers`` where given, are left as they are."""
    live = [g for g in graphs if g.fidelity is not None and (layers is None or g.layer in layers)]
    layers = sorted({g.layer for g in live})
    ids = sample_windows(len(windows), split.heldout, exclude, config, seed)
    rows = np.concatenate([windows[ids], split.heldout_windows])
    out: dict[tuple[int, int], NeuronGraph] = {(g.layer, g.neuron): g for g in graphs}
    done = 0
    for start in range(0, len(layers), layers_per_pass):
        chunk = layers[start:start + layers_per_pass]
        wanted = {layer: np.array(sorted({g.neuron for g in live if g.layer == layer})) for layer in chunk}
        acts = layer_activations(model, rows, chunk, wanted)  # {layer: (rows, P, n)}
        for folded in sorted({g.matching.normalized for g in live if g.layer in chunk}):
            classes = TokenClasses.of(model.vocab, folded)

            base, held = _sample(classes, windows[ids]), _sample(classes, split.heldout_windows)
            for layer in chunk:
                column = {int(n): i for i, n in enumerate(wanted[layer])}
                text = OrdinaryText(classes, ids, base, acts[layer][:len(ids)], held, acts[layer][len(ids):])
                for g in live:
                    if g.layer != layer or g.matching.normalized != folded:
                        continue
                    fidelity = heldout_fidelity(g.graph, g.matching.default, g.neuron, g.max_activation,
                                                text, rule=g.matching.rule, column=column[g.neuron])
                    out[(g.layer, g.neuron)] = g.model_copy(
                        update={"fidelity": g.fidelity.model_copy(update={"heldout": fidelity})})
                    done += 1
                    if progress is not None and done % 256 == 0:
                        progress(done, len(live), f"scored {done}/{len(live)} graphs on held-out text")
    return list(out.values())


__all__ = ["CorpusSplit", "OrdinaryText", "calibrated", "calibration_config", "heldout_fidelity", "ordinary_texts",
           "sample_windows", "score_stored"]
