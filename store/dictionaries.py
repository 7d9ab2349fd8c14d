"""Dictionaries a server or a command knows by name, without torch: where they are, how wide, how good.

A dictionary (an SAE or a transcoder, ``builder/dictionaries/``) belongs to one model and is
named within it: tools say ``model="smollm2-135m", units="mlp-3k"``, stores and scans file its
graphs under the units key ``smollm2-135m@mlp-3k`` (``store.names.units_key``).

- :func:`embedded_dictionaries`: the dictionaries shipped in the repository's ``dictionaries/<model>/<name>/``.
- :func:`parse_dictionary_option`: an operator's ``--dictionary NAME=PATH`` (the default model's) or
  ``--dictionary MODEL@NAME=PATH``; PATH is a local folder, or online a Hugging Face repo
  (``owner/repo``) or ``saelens:RELEASE/SAE_ID``.
- :func:`survey`: a local folder's width (latents a layer, read from the safetensors headers:
  the encoder bias's length) and its ``quality.json`` (``n2g dictionary quality``), for
  ``list_models`` and range checks before anything loads.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.models import DEFAULT_MODEL
from store.names import NEURONS, UNITS_SEP, units_key

_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
_BIASES = ("b_enc", "encoder.bias")


@dataclass(frozen=True)
class DictionarySpec:
    """A dictionary by name: the model it reads, and where its files are."""

    name: str
    model: str
    location: str
    """A local folder, or (online) a Hugging Face repo or ``saelens:RELEASE/SAE_ID``."""
    width: int | None = None
    """Latents a layer (the widest layer's), where known without loading."""
    quality: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """The units key its graphs are filed under."""
        return units_key(self.model, self.name)


def _default_dir() -> Path:
    """``dictionaries/`` of this checkout, else where a wheel installed it (``<prefix>/share/n2g-mcp``)."""
    checkout = Path(__file__).resolve().parents[1] / "dictionaries"
    installed = Path(sys.prefix) / "share" / "n2g-mcp" / "dictionaries"
    return installed if not checkout.is_dir() and installed.is_dir() else checkout


DICTIONARIES_DIR = _default_dir()


def _header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors file's JSON header (8 bytes of length, then the header)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return {}
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return {}
    return {k: v.get("shape", []) for k, v in header.items() if isinstance(v, dict)}


def survey(folder: Path) -> tuple[int | None, dict[str, Any] | None]:
    """``(width, quality)`` of a local dictionary folder: the widest encoder bias among its
    safetensors files (two levels deep, as the reader looks), and its ``quality.json``."""
    width: int | None = None
    if folder.is_dir():
        files = [*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors"), *folder.glob("*/*/*.safetensors")]
        for path in files:
            shapes = _header_shapes(path)
            for name in _BIASES:
                if len(shapes.get(name, [])) == 1:
                    width = max(width or 0, int(shapes[name][0]))
    quality = None
    try:
        quality = json.loads((folder / "quality.json").read_text())
    except (OSError, ValueError):
        pass
    return width, quality if isinstance(quality, dict) else None


def spec_at(name: str, model: str, location: str) -> DictionarySpec:
    """A spec with what a local folder tells without loading it."""
    path = Path(location).expanduser()
    width, quality = survey(path) if path.is_dir() else (None, None)
    return DictionarySpec(name=name, model=model, location=str(path) if path.exists() else location,
                          width=width, quality=quality)


def embedded_dictionaries(root: Path | None = None) -> list[DictionarySpec]:
    """The dictionaries shipped in ``dictionaries/<model>/<name>/`` (none where there is no such folder)."""
    root = DICTIONARIES_DIR if root is None else root
    if not root.is_dir():
        return []
    return [spec_at(folder.name, model_dir.name, str(folder))
            for model_dir in sorted(p for p in root.iterdir() if p.is_dir())
            for folder in sorted(p for p in model_dir.iterdir() if p.is_dir())]


def parse_dictionary_option(text: str, default_model: str = DEFAULT_MODEL) -> DictionarySpec:
    """``NAME=PATH`` (a dictionary of the default model) or ``MODEL@NAME=PATH``.

    >>> parse_dictionary_option("res-16k=/sae/gemma", "gemma3-270m").key
    'gemma3-270m@res-16k'
    >>> parse_dictionary_option("smollm2-135m@eai=EleutherAI/sae-SmolLM2-135M-64x").location
    'EleutherAI/sae-SmolLM2-135M-64x'

    Raises:
        ValueError: where the text is not of that form or the name is not a plain name.
    """
    named, sep, location = text.partition("=")
    model, at, name = named.strip().rpartition(UNITS_SEP)
    model, name, location = (model.strip() if at else default_model), name.strip(), location.strip()
    if not sep or not name or not location or not model:
        raise ValueError(f"--dictionary takes NAME=PATH or MODEL@NAME=PATH, got {text!r}")
    if not _NAME.match(name) or name == NEURONS:
        raise ValueError(f"--dictionary NAME must be a plain name such as 'res-16k' (not {NEURONS!r}), got {name!r}")
    return spec_at(name, model, location)
