"""Neuron ids (``L3/N1024``): the one place that writes and parses them."""

from __future__ import annotations

import re

_ID = re.compile(r"^\s*L(\d+)\s*/\s*N(\d+)\s*$", re.IGNORECASE)


def neuron_id(layer: int, neuron: int) -> str:
    """The readable id of a neuron.

    >>> neuron_id(3, 1024)
    'L3/N1024'
    """
    return f"L{layer}/N{neuron}"


def file_safe(name: str) -> str:
    """A name usable as one file or folder name: runs of other characters become ``_``.

    >>> file_safe("NeelNanda/SoLU_6L"), file_safe("blocks.{layer}.mlp.hook_post")
    ('NeelNanda_SoLU_6L', 'blocks._layer_.mlp.hook_post')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def parse_neuron_id(text: str) -> tuple[int, int]:
    """Parse ``L{layer}/N{neuron}`` (case- and space-insensitive) into ``(layer, neuron)``.

    >>> parse_neuron_id("l2/n117")
    (2, 117)

    Raises:
        ValueError: if ``text`` is not a neuron id.
    """
    match = _ID.match(text)
    if match is None:
        raise ValueError(f"not a neuron id: {text!r}; expected the form 'L3/N1024'")
    return int(match.group(1)), int(match.group(2))
