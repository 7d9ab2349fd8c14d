"""What the query library needs from the model side, and the real one, imported lazily.

:class:`LiveBackend` is the interface: tokenise, run a neuron, build graphs, each for a
:class:`store.models.ModelSpec`. :class:`BuilderBackend` forwards to ``builder.live.LiveModels``
(the one live-model layer, with its one lock), importing it (and torch) only on the first call
that needs a model, and turns the builder's errors into :mod:`n2g_mcp.errors`. Tests pass a
double with the same methods (``tests/fakes.py``).

Every method may be slow (a first call loads a model) and is called from a worker thread.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from n2g_mcp.errors import BadArgument, Cancelled, Unavailable
from store.graph import NeuronGraph
from store.models import ModelSpec
from store.progress import Progress
from store.scanfile import ScanFile


class LiveBackend(Protocol):
    """The model side, as the query library uses it. Errors are :mod:`n2g_mcp.errors`."""

    def availability(self, spec: ModelSpec) -> str | None:
        """None where this model can run here, else why not. Fast; loads nothing."""
        ...

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        """The text's tokens as graphs store them (needs the tokenizer only, where it is cached)."""
        ...

    def activations(self, spec: ModelSpec, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        """The text's tokens and the neuron's raw activation on each."""
        ...

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: ScanFile | None = None) -> list[NeuronGraph]:
        """Build graphs, append them to ``store_path``, return them.

        Raises:
            Cancelled: when ``cancel`` was set.
        """
        ...

    # The probes of the whole model (issue: find neurons without a graph). Each returns the
    # builder's result dataclass (``builder.firing.Hit``, ``builder.induction.InductionScore``,
    # ``builder.ablate.Ablation``, ``builder.hypothesis.HypothesisResult``), read by attribute.
    def encode(self, spec: ModelSpec, text: str) -> tuple[list[int], list[str]]:
        """The text's token ids and token strings."""
        ...

    def neurons_at(self, spec: ModelSpec, ids: Sequence[int], position: int, layers: Sequence[int],
                   max_activation: dict[int, Any], limit: int) -> list[Any]:
        """The neurons most active at ``ids[position]``, normalised by ``max_activation``."""
        ...

    def induction(self, spec: ModelSpec, layers: Sequence[int], sequences: int, length: int, seed: int,
                  max_activation: dict[int, Any] | None) -> list[Any]:
        """Every neuron of ``layers`` on the repeated-sequence probe, best first."""
        ...

    def ablate(self, spec: ModelSpec, neurons: Sequence[tuple[int, int]], text: str | None, mode: str,
               control: bool, means: dict[int, Any] | None) -> Any:
        """The next-token loss with the neurons ablated, and a random control."""
        ...

    def hypothesis(self, spec: ModelSpec, layer: int, neuron: int, pattern: str, kind: str,
                   scan_file: ScanFile) -> Any:
        """A pattern scored as an explanation of the neuron at corpus scale."""
        ...


class BuilderBackend:
    """The real :class:`LiveBackend` over ``builder.live.LiveModels``, created on first use."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._models: Any = None
        self._creating = threading.Lock()

    def availability(self, spec: ModelSpec) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return ("building and comparing with the real neuron need the builder extra: "
                    "pip install 'n2g-mcp[builder]'")
        return None

    def _live(self) -> Any:
        with self._creating:
            if self._models is None:
                reason = self.availability(ModelSpec(name="", location=""))
                if reason is not None:
                    raise Unavailable(reason)
                from builder.live import LiveModels

                self._models = LiveModels(device=self.device)
            return self._models

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from builder.errors import BadRequest, Cancelled as BuilderCancelled, N2GError

        try:
            return getattr(self._live(), method)(*args, **kwargs)
        except BuilderCancelled as exc:
            raise Cancelled(str(exc)) from exc
        except BadRequest as exc:
            raise BadArgument(str(exc)) from exc
        except N2GError as exc:
            raise Unavailable(str(exc)) from exc

    def tokens(self, spec: ModelSpec, text: str) -> list[str]:
        return self._call("tokens", spec, text)

    def activations(self, spec: ModelSpec, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        return self._call("activations", spec, layer, neuron, text)

    def build(self, spec: ModelSpec, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              scan_file: ScanFile | None = None) -> list[NeuronGraph]:
        return self._call("build", spec, layer, neurons, store_path, progress=progress, cancel=cancel,
                          scan_file=scan_file)

    def encode(self, spec: ModelSpec, text: str) -> tuple[list[int], list[str]]:
        return self._call("encode", spec, text)

    def neurons_at(self, spec: ModelSpec, ids: Sequence[int], position: int, layers: Sequence[int],
                   max_activation: dict[int, Any], limit: int) -> list[Any]:
        return self._call("neurons_at", spec, ids, position, layers, max_activation, limit)

    def induction(self, spec: ModelSpec, layers: Sequence[int], sequences: int, length: int, seed: int,
                  max_activation: dict[int, Any] | None) -> list[Any]:
        return self._call("induction", spec, layers, sequences, length, seed, max_activation)

    def ablate(self, spec: ModelSpec, neurons: Sequence[tuple[int, int]], text: str | None, mode: str,
               control: bool, means: dict[int, Any] | None) -> Any:
        return self._call("ablate", spec, neurons, text, mode, control, means)

    def hypothesis(self, spec: ModelSpec, layer: int, neuron: int, pattern: str, kind: str,
                   scan_file: ScanFile) -> Any:
        return self._call("hypothesis", spec, layer, neuron, pattern, kind, scan_file)
