"""What the query library needs from the model side, and the real one, imported lazily.

:class:`LiveBackend` is the interface, defined once: tokenise, run a neuron, build graphs, and
the whole-model probes, each for a :class:`store.models.ModelSpec`. Results are the torch-free
types of :mod:`store.probes`; errors are :mod:`store.errors` (the server turns them into tool
errors). ``builder.run.live.LiveModels`` implements it; :class:`BuilderBackend` creates one (and
imports torch) only on the first call that needs a model. Tests pass a double with the same
methods (``tests/fakes.py``).

Every method may be slow (a first call loads a model) and is called from a worker thread.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from store.errors import Unavailable
from store.effects import OutputEffects
from store.graph import NeuronGraph
from store.models import ModelSpec
from store.probes import (
    Ablation,
    AblationMode,
    BuildMethod,
    Coactivation,
    FiringHit,
    HypothesisResult,
    InductionProbe,
    Neuron,
    PatternKind,
    Steering,
)
from store.progress import Progress
from store.scanfile import ScanFile

if TYPE_CHECKING:
    import numpy as np

    from builder.run.live import LiveModels


class LiveBackend(Protocol):
    """The model side, as the query library uses it."""

    def availability(self, spec: ModelSpec) -> str | None:
        """None where this model can run here, else why not. Fast; loads nothing."""
        ...

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        """The text's tokens as graphs store them (needs the tokenizer only, where it is cached)."""
        ...

    def encode(self, spec: ModelSpec, text: str) -> tuple[list[int], list[str]]:
        """The text's token ids and token strings; once the model is loaded, without waiting for
        another call's model work (argument checks use it before the model is taken)."""
        ...

    def activations(self, spec: ModelSpec, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        """The text's tokens and the neuron's raw activation on each."""
        ...

    def window_activations(self, spec: ModelSpec, layer: int, neuron: int,
                           rows: Sequence[Sequence[int]]) -> list[list[float]]:
        """The neuron's raw activation at every token of each row of token ids, each row run on
        its own after a BOS, as the scan ran its windows (batched)."""
        ...

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: ScanFile | None = None, method: BuildMethod = "ordinary") -> list[NeuronGraph]:
        """Build graphs by ``method`` (stored or not: the caller applied ``store.pending``),
        append them to ``store_path`` and return them.

        Raises:
            Cancelled: when ``cancel`` was set.
        """
        ...

    def neurons_at(self, spec: ModelSpec, ids: Sequence[int], position: int, layers: Sequence[int],
                   max_activation: dict[int, np.ndarray], limit: int) -> list[FiringHit]:
        """The neurons most active at ``ids[position]``, normalised by ``max_activation``."""
        ...

    def induction(self, spec: ModelSpec, layers: Sequence[int], sequences: int, length: int, seeds: Sequence[int],
                  max_activation: dict[int, np.ndarray] | None,
                  cancel: threading.Event | None = None) -> InductionProbe:
        """Every neuron of ``layers`` on the repeated-sequence probe, best first, and the copy losses.

        Raises:
            Cancelled: when ``cancel`` was set (checked between seeds).
        """
        ...

    def ablate(self, spec: ModelSpec, neurons: Sequence[Neuron], text: str | None, mode: AblationMode,
               controls: int, means: dict[int, np.ndarray] | None, seed: int, each: bool,
               cancel: threading.Event | None = None) -> Ablation:
        """The next-token loss with the neurons ablated, ``controls`` random draws of as many
        neurons of the same layers, and with ``each`` every neuron's own effect.

        Raises:
            Cancelled: when ``cancel`` was set (checked before every forward pass).
        """
        ...

    def steer(self, spec: ModelSpec, neurons: Sequence[Neuron], values: Sequence[float], prompt: Sequence[int],
              max_new_tokens: int, *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> Steering:
        """Greedy continuations of ``prompt``, clean and with the neurons clamped to ``values``.

        Raises:
            Cancelled: when ``cancel`` was set (checked before every generated token).
        """
        ...

    def hypothesis(self, spec: ModelSpec, layer: int, neuron: int, pattern: str, kind: PatternKind,
                   scan_file: ScanFile, cancel: threading.Event | None = None) -> HypothesisResult:
        """A pattern scored as an explanation of the neuron at corpus scale.

        Raises:
            Cancelled: when ``cancel`` was set (checked between chunks of the corpus).
        """
        ...

    def coactivation(self, spec: ModelSpec, layer: int, neuron: int, scan_file: ScanFile, layers: Sequence[int],
                     limit: int, *, progress: Progress | None = None,
                     cancel: threading.Event | None = None) -> Coactivation:
        """The ``limit`` neurons of ``layers`` most correlated with the neuron over its top windows
        (from the scan) and as many random build-split windows.

        Raises:
            BadArgument: where the neuron has no top window to read.
            Cancelled: when ``cancel`` was set (checked before every pass and at every layer).
        """
        ...

    def output_effects(self, spec: ModelSpec, layer: int, neuron: int, windows: Sequence[Sequence[int]],
                       raised: float, top: int) -> OutputEffects:
        """The next-token change at the last token of each window (its pivot) with the neuron zeroed
        and set to ``raised`` there, beside its direct path from the weights."""
        ...


class BuilderBackend:
    """The real :class:`LiveBackend`: ``builder.run.live.LiveModels``, created on first use.

    Every method but :meth:`availability` is the live models' own, reached through
    ``__getattr__`` so that the interface is written once (in :class:`LiveBackend`).

    Args:
        device: where models run (default: cuda if available).
        models: live models made already (a script or test that added its own model).
    """

    def __init__(self, device: str | None = None, models: LiveModels | None = None) -> None:
        self.device = device
        self._models = models
        self._creating = threading.Lock()

    def availability(self, spec: ModelSpec) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return ("building and comparing with the real neuron need the builder extra: "
                    "pip install 'n2g-mcp[builder]'")
        return None

    def _live(self) -> LiveModels:
        with self._creating:
            if self._models is None:
                reason = self.availability(ModelSpec(name="", location=""))
                if reason is not None:
                    raise Unavailable(reason)
                from builder.run.live import LiveModels

                self._models = LiveModels(device=self.device)
            return self._models

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._live(), name)
