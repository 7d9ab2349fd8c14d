"""The server's access to real models: tokenising, running a neuron, building graphs.

The MCP tools never import torch or ``builder.live`` themselves; they go through a
:class:`LiveBackend`. :class:`BuilderBackend` is the real one: it imports the builder lazily,
inside the calls that need it, loads each model once behind a lock, and runs one model's work at
a time (a model is not safe to share between threads). Tests pass a fake with the same methods
(``n2g_mcp/fake_live.py``), so the server is tested without a model.

Every method may be slow (a first call loads a model or fetches its tokenizer) and is called from
a worker thread, never on the event loop.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from store.graph import NeuronGraph

log = logging.getLogger(__name__)

Progress = Callable[[float, float, str], None]
"""``progress(done, total, message)``, called from the worker thread."""


class LiveError(Exception):
    """A model-side problem the agent can act on; the message says how."""


class BuildCancelled(LiveError):
    """A build stopped because the caller cancelled it."""


class LiveBackend(Protocol):
    """What the server needs from the model side."""

    default_model: str
    """The model a tool uses when the agent names none."""

    def shape(self, model: str) -> tuple[int, int] | None:
        """``(n_layers, d_mlp)`` where known without loading the model, else None. Fast."""
        ...

    def availability(self, model: str) -> str | None:
        """None where graphs of this model can be built here, else why not. Fast."""
        ...

    def tokens(self, model: str, text: str) -> list[str]:
        """The text's tokens as graphs store them (needs the tokenizer only)."""
        ...

    def activations(self, model: str, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        """The text's tokens and the neuron's raw activation on each."""
        ...

    def build(self, model: str, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> list[NeuronGraph]:
        """Build graphs, append them to ``store_path``, return them.

        Raises:
            BuildCancelled: when ``cancel`` was set.
            LiveError: for a request the model side refuses (unknown model, bad range).
        """
        ...


class BuilderBackend:
    """The real backend over ``builder/``, imported lazily; models load once, behind a lock."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._models: dict[str, Any] = {}
        self._loading = threading.Lock()
        self._model_locks: dict[str, threading.Lock] = {}

    @property
    def default_model(self) -> str:  # type: ignore[override]
        from builder.models import DEFAULT_MODEL  # torch-free

        return DEFAULT_MODEL

    def shape(self, model: str) -> tuple[int, int] | None:
        from builder.models import model_shape  # torch-free

        return model_shape(model)

    def availability(self, model: str) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return ("building and comparing with the real neuron need the builder extra: "
                    "pip install 'n2g-mcp[builder]'")
        if importlib.util.find_spec("builder.live") is None:
            return "this installation has no builder.live module; reinstall n2g-mcp with the builder extra"
        return None

    # ----------------------------------------------------------------- loading
    def _lock_for(self, model: str) -> threading.Lock:
        with self._loading:
            return self._model_locks.setdefault(model, threading.Lock())

    def _model(self, model: str) -> Any:
        """The loaded model; the caller holds the model's lock, so it loads once."""
        loaded = self._models.get(model)
        if loaded is None:
            reason = self.availability(model)
            if reason is not None:
                raise LiveError(reason)
            from builder.errors import N2GError
            from builder.live import load_live_model

            log.info("loading model %s (once; can take a minute)", model)
            try:
                loaded = load_live_model(model, device=self.device)
            except N2GError as exc:
                raise LiveError(str(exc)) from exc
            self._models[model] = loaded
        return loaded

    # ----------------------------------------------------------------- work
    def tokens(self, model: str, text: str) -> list[str]:
        loaded = self._models.get(model)
        if loaded is not None:
            return list(loaded.tokens(text))
        from builder.errors import N2GError
        from builder.tokenizer import load_tokenizer  # no torch once the tokenizer is cached

        try:
            return list(load_tokenizer(model).tokens(text))
        except N2GError as exc:
            raise LiveError(str(exc)) from exc

    def activations(self, model: str, layer: int, neuron: int, text: str) -> tuple[list[str], list[float]]:
        from builder.errors import N2GError

        with self._lock_for(model):
            loaded = self._model(model)
            try:
                tokens, acts = loaded.activations(layer, neuron, text)
            except N2GError as exc:
                raise LiveError(str(exc)) from exc
        return list(tokens), [float(a) for a in acts]

    def build(self, model: str, layer: int, neurons: Sequence[int], store_path: Path, *,
              progress: Progress | None = None, cancel: threading.Event | None = None) -> list[NeuronGraph]:
        from builder.errors import Cancelled, N2GError

        with self._lock_for(model):
            if progress is not None and model not in self._models:
                progress(0, 1, f"loading {model} (once; can take a minute)")
            loaded = self._model(model)
            try:
                return loaded.build(layer, list(neurons), store_path, progress=progress, cancel=cancel)
            except Cancelled as exc:
                raise BuildCancelled(str(exc)) from exc
            except N2GError as exc:
                raise LiveError(str(exc)) from exc
