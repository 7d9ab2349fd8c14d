"""The models a server knows by name, and the only models an MCP client may name.

In: the embedded default (``store.models``), the models the operator configured at start
(``n2g-mcp --model NAME=PATH``, repeatable) and whether hub names are allowed
(``--allow-hub-models``). Out: :meth:`ServedModels.spec`, a :class:`store.models.ModelSpec` for a
name a client sent, or None.

A client's name is never looked up on the disk: a configured name maps to the operator's path, an
embedded name to its cache, and a hub name (only where allowed) to the hub with ``local=False``,
so the loader never tries it as a path. Anything shaped like a path is refused by
:func:`looks_like_path` before any lookup, and the refusal does not repeat the name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from store.dictionaries import DictionarySpec, embedded_dictionaries
from store.models import DEFAULT_MODEL, EMBEDDED, ModelSpec, local_shape
from store.names import NEURONS, split_units_key

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
"""A hub id: ``name`` or ``org/name``, no leading dot, no other separators."""


def looks_like_path(name: str) -> bool:
    """Whether a name could only be a file-system path (so a client may not send it).

    >>> [looks_like_path(n) for n in ("smollm2-135m", "EleutherAI/pythia-70m", "/etc", "./m", "~/m", "a/b/c", "a/../b")]
    [False, False, True, True, True, True, True]
    """
    return _HUB_NAME.match(name) is None or ".." in name


class ServedModels:
    """The models one server can run, by name; see the module docstring.

    Args:
        default: the model tools use when none is named.
        configured: models the operator named at start; they may point at local paths.
        allow_hub: whether other hub-shaped names may be loaded from the model hub.
        embedded: whether the embedded models are served (tests over a double turn them off).
    """

    def __init__(self, default: ModelSpec | None = None, configured: Iterable[ModelSpec] = (),
                 allow_hub: bool = False, embedded: bool = True,
                 dictionaries: Iterable[DictionarySpec] | None = None) -> None:
        self._known: dict[str, ModelSpec] = {name: ModelSpec.embedded(name) for name in EMBEDDED if embedded}
        for spec in configured:
            self._known[spec.name] = spec
        self.default = default if default is not None else self._known.get(DEFAULT_MODEL) or ModelSpec.embedded()
        self._known[self.default.name] = self.default
        self.allow_hub = allow_hub
        found = embedded_dictionaries() if dictionaries is None and embedded else list(dictionaries or ())
        self.dictionaries: dict[str, DictionarySpec] = {d.key: d for d in found}
        """The dictionaries served, by units key (``model@name``), of models this server runs."""

    @property
    def default_name(self) -> str:
        """The name of the default model."""
        return self.default.name

    def names(self) -> list[str]:
        """The models this server can run without the hub: the default first, then by name."""
        return sorted(self._known, key=lambda n: (n != self.default_name, n))

    def unit_keys(self) -> list[str]:
        """The units keys (``model@dictionary``) of the dictionaries of the models it runs."""
        return sorted(k for k, d in self.dictionaries.items() if d.model in self._known)

    def spec(self, name: str) -> ModelSpec | None:
        """The spec of a model (or ``model@dictionary``) a client named, or None where this server
        cannot run it."""
        model, units = split_units_key(name)
        if units != NEURONS:
            base, found = self.spec(model), self.dictionaries.get(name)
            if base is None or found is None:
                return None
            shape = (base.shape[0], found.width) if base.shape and found.width else None
            return replace(base, units=units, dictionary=found.location, shape=shape)
        known = self._known.get(name)
        if known is not None:
            return known
        if self.allow_hub and not looks_like_path(name):
            return ModelSpec(name=name, location=name, local=False)
        return None

    def shape(self, name: str) -> tuple[int, int] | None:
        """``(n_layers, d_mlp)`` (a dictionary's: its width) where known without loading the model."""
        if split_units_key(name)[1] != NEURONS:
            spec = self.spec(name)
            return None if spec is None else spec.shape
        known = self._known.get(name)
        return None if known is None else known.shape

    def units_of(self, model: str) -> list[str]:
        """The names of a model's dictionaries."""
        return sorted(d.name for d in self.dictionaries.values() if d.model == model)


def parse_model_option(text: str) -> ModelSpec:
    """A model the operator configured: ``NAME=PATH`` (a Hugging Face folder or a ``.gguf`` file).

    >>> parse_model_option("tiny=/models/tiny").name
    'tiny'

    Raises:
        ValueError: where the text is not ``NAME=PATH`` or the name is not a plain name.
    """
    name, sep, location = text.partition("=")
    name, location = name.strip(), location.strip()
    if not sep or not name or not location:
        raise ValueError(f"--model takes NAME=PATH, got {text!r}")
    if looks_like_path(name) or "/" in name:
        raise ValueError(f"--model NAME must be a plain name such as 'my-model', got {name!r}")
    path = Path(location).expanduser()
    return ModelSpec(name=name, location=str(path), local=True,
                     shape=local_shape(path if path.is_dir() else path.parent))
