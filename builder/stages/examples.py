"""Examples: a neuron's top windows split into train and test, and the train tokens to explain.

In: a layer's scan (each neuron's top windows and the activations along them) and the corpus
windows. Out, per neuron: its :class:`Split` (train and test ranks, reproducible per neuron) and
its :class:`TopExample` records, the windows and pivot tokens the prune stage cuts down.

Which tokens become examples (``ExampleConfig``): each train window's argmax, in rank order, then
(``pivots="firing"``) its other firing tokens, strongest first; from the first ``windows`` train
windows, at most ``max_pivots`` of them. Every train window still calibrates the fit, whichever
tokens become examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from builder.config import BuildConfig, EvalConfig, ExampleConfig
from builder.stages.scan import LayerScan


@dataclass(frozen=True)
class TopExample:
    """A top-activating corpus window of one neuron."""

    neuron: int
    window: Sequence[int]
    pivot: int
    """Index of the window's most activating token."""
    activation: float
    """The neuron's activation on the pivot, in the whole window."""


class Split(NamedTuple):
    """Ranks (0-based) of a neuron's top windows: those that build its graph and those that score it."""

    train: np.ndarray
    test: np.ndarray


def split(k: int, config: EvalConfig, seed: int, layer: int, neuron: int) -> Split:
    """Train and test ranks (0-based) of a neuron's ``k`` top windows, reproducible per neuron.

    The paper's top ``config.top`` are split at random, ``config.train`` to train and the rest to
    test; ranks below them (up to ``config.extra_train`` of them) join train. The test half
    depends on the seed, layer and neuron only, never on how many extra windows there are.

    >>> from builder.config import EvalConfig
    >>> train, test = split(50, EvalConfig(), 0, 3, 7)
    >>> len(train), len(test), sorted(set(train) | set(test)) == list(range(50))
    (40, 10, True)
    >>> (split(20, EvalConfig(), 0, 3, 7).test == test).all()
    np.True_
    """
    top = min(config.top, k)
    order = np.random.default_rng([seed, layer, neuron]).permutation(top)
    extra = np.arange(top, min(k, top + config.extra_train))
    return Split(np.concatenate([np.sort(order[:config.train]), extra]), np.sort(order[config.train:]))


def neuron_split(layer_scan: LayerScan, config: BuildConfig, layer: int, neuron: int) -> Split:
    """:func:`split` of one neuron's top windows in a layer scan, under the build's settings."""
    return split(layer_scan.values.shape[0], config.eval, config.seed, layer, neuron)


def pivots(traces: np.ndarray, max_act: float, config: ExampleConfig) -> list[tuple[int, int]]:
    """``(window, position)`` of the examples of one neuron, from its train windows' traces
    ``(windows, pos)`` in rank order: each window's argmax first, in rank order, then the other
    firing tokens, strongest first; at most ``max_pivots``.

    >>> traces = np.array([[0.0, 1.0, 0.6], [0.8, 0.0, 0.9]])
    >>> pivots(traces, 1.0, ExampleConfig())
    [(0, 1), (1, 2), (1, 0), (0, 2)]
    >>> pivots(traces, 1.0, ExampleConfig(pivots="argmax"))
    [(0, 1), (1, 2)]
    """
    argmax = [(j, int(np.argmax(t))) for j, t in enumerate(traces) if t.max() > 0]
    others: list[tuple[int, int]] = []
    if config.pivots == "firing":
        firing = np.argwhere(traces >= config.firing * max_act)  # (n, 2): window, pos
        chosen = set(argmax)
        others = sorted((p for p in map(tuple, firing.tolist()) if p not in chosen),
                        key=lambda p: -traces[p])
    found = argmax + others
    return found if config.max_pivots is None else found[:config.max_pivots]


def top_examples(layer_scan: LayerScan, windows: np.ndarray, config: BuildConfig, layer: int,
                 neuron: int) -> list[TopExample]:
    """The examples of one live neuron (a positive max activation), from its train windows."""
    max_act = float(layer_scan.max_activation[neuron])
    train = neuron_split(layer_scan, config, layer, neuron).train
    ranks = train if config.examples.windows is None else train[:config.examples.windows]
    traces = layer_scan.traces[ranks, neuron]  # (windows, pos)
    return [TopExample(neuron, windows[layer_scan.windows[ranks[j], neuron]].tolist(), p,
                       float(traces[j, p]))
            for j, p in pivots(traces, max_act, config.examples)]
