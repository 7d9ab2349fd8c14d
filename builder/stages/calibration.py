"""Calibration evidence: what the fit judges candidate paths on beyond the snippets.

In: a model, a layer, its scan and the corpus windows. Out, each measured once for every neuron
of the layer (``FitConfig.calibrate``; nothing without it):

- :class:`Calibration`: random corpus windows (never the evaluation's random windows) and every
  neuron's activations along them, the fit's negatives (``FitConfig.negatives``);
- the layer's :class:`~builder.probes.tokens.TokenProbe`, every corpus token standing alone, in
  early layers (``FitConfig.probe_layers``);
- :class:`RepeatProbe`: the repeated-sequence probe's texts and the layer's activations on them,
  where repeat paths are judged (``FitConfig.repeat_probe``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from builder.config import BuildConfig
from builder.forward import run_layers
from builder.models import LoadedModel
from builder.probes.induction import repeated_sequences
from builder.probes.tokens import TokenProbe, probe_tokens
from builder.stages.scan import LayerScan


@dataclass(frozen=True)
class Calibration:
    """Random corpus windows the fit calibrates paths on, and every neuron's activations there."""

    windows: np.ndarray
    """``(r,)`` ids of the windows in the corpus windows."""
    activations: np.ndarray
    """``(r, window, d_mlp)`` every neuron of the layer along each."""


def calibration_windows(model: LoadedModel, layer: int, layer_scan: LayerScan, windows: np.ndarray,
                        config: BuildConfig) -> Calibration:
    """Random corpus windows for calibration, never the evaluation's random windows, and every
    neuron's activations on them. One forward pass for all neurons of the layer."""
    r = config.fit.negatives if config.fit.calibrate else 0
    pool = np.setdiff1d(np.arange(len(windows)), layer_scan.random_windows)
    r = min(r, len(pool))
    if r == 0:
        return Calibration(np.zeros(0, np.int64), np.zeros((0, windows.shape[1], model.d_mlp), np.float32))
    ids = np.sort(np.random.default_rng([config.seed, layer, 1]).choice(pool, r, replace=False))
    acts = run_layers(model, windows[ids].tolist(), [layer])[layer]  # (r, window, d_mlp)
    return Calibration(ids, acts.cpu().numpy())


def layer_probe(model: LoadedModel, layer: int, windows: np.ndarray,
                config: BuildConfig) -> TokenProbe | None:
    """The token probe of a layer where the config asks for one (``FitConfig.probe_layers``)."""
    if not config.fit.calibrate or layer >= config.fit.probe_layers:
        return None
    return probe_tokens(model, layer, np.unique(windows).tolist())


@dataclass(frozen=True)
class RepeatProbe:
    """Texts that show in-context behaviour, and every neuron's activations on them."""

    tokens: list[list[str]]
    """Each sequence's token strings: random plain words, then the same again."""
    activations: np.ndarray
    """``(sequences, pos, d_mlp)`` every neuron of the layer along each."""


REPEAT_PROBE_SEED = 7
"""Seed of the sequences repeat paths are judged on: not ``find_induction_neurons``' default
(0), so a graph is never scored on the very sequences that ranked its neuron."""
REPEAT_PROBE_LENGTH = 48
"""Words a sequence before its copy (the probe's default)."""


def repeat_probe(model: LoadedModel, layer: int, config: BuildConfig) -> RepeatProbe | None:
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
    return RepeatProbe([[model.vocab[t] for t in row] for row in rows], acts)
