"""Unit ids (``L3/N1024`` a neuron, ``L7/F12`` a dictionary latent) and their ranges: the one
place that writes, parses and checks them, and the one key of a model's units (``units_key``)."""

from __future__ import annotations

import re

from store.errors import OutOfRange

_ID = re.compile(r"^\s*L(\d+)\s*/\s*[NF](\d+)\s*$", re.IGNORECASE)

NEURONS = "neurons"
"""The units of a model's MLP neurons (the default); any other name is a dictionary's."""
UNITS_SEP = "@"
"""Joins a model and a dictionary in a units key: ``smollm2-135m@mlp-3k``."""


def units_key(model: str, units: str | None = None) -> str:
    """The one key of a model's units, under which stores, indexes and catalogs file graphs: the
    model's name for its neurons, ``model@units`` for a dictionary's latents (so a neuron's graph
    and a latent's are never filed together).

    >>> units_key("smollm2-135m"), units_key("smollm2-135m", "mlp-3k")
    ('smollm2-135m', 'smollm2-135m@mlp-3k')
    """
    return model if units in (None, NEURONS) else f"{model}{UNITS_SEP}{units}"


def split_units_key(key: str) -> tuple[str, str]:
    """``(model, units)`` of a units key.

    >>> split_units_key("smollm2-135m@mlp-3k"), split_units_key("smollm2-135m")
    (('smollm2-135m', 'mlp-3k'), ('smollm2-135m', 'neurons'))
    """
    model, sep, units = key.rpartition(UNITS_SEP)
    return (model, units) if sep and model else (key, NEURONS)


def unit_id(layer: int, index: int, units: str | None = None) -> str:
    """A unit's readable id: ``L3/N1024`` for a neuron, ``L7/F12`` for a dictionary latent.

    >>> unit_id(3, 1024), unit_id(7, 12, "mlp-3k")
    ('L3/N1024', 'L7/F12')
    """
    return neuron_id(layer, index) if units in (None, NEURONS) else f"L{layer}/F{index}"


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


def keyed_id(key: str, layer: int, index: int) -> str:
    """A unit's readable id under a units key (``L3/N1024``, or ``L7/F12`` under ``model@units``).

    >>> keyed_id("smollm2-135m@mlp-3k", 7, 12), keyed_id("smollm2-135m", 3, 1024)
    ('L7/F12', 'L3/N1024')
    """
    return unit_id(layer, index, split_units_key(key)[1])


def parse_neuron_id(text: str) -> tuple[int, int]:
    """Parse ``L{layer}/N{neuron}`` or ``L{layer}/F{latent}`` (case- and space-insensitive) into
    ``(layer, index)``; which units the index counts is the caller's ``units``.

    >>> parse_neuron_id("l2/n117")
    (2, 117)

    Raises:
        ValueError: if ``text`` is not a neuron id.
    """
    match = _ID.match(text)
    if match is None:
        raise ValueError(f"not a neuron id: {text!r}; expected the form 'L3/N1024' (or 'L7/F12' for a latent)")
    return int(match.group(1)), int(match.group(2))


def check_range(model: str, shape: tuple[int, int], layer: int | None = None,
                neuron: int | None = None) -> None:
    """Refuse a layer or neuron outside a model's ``(n_layers, d_mlp)`` shape; the one wording
    the command line, the server and the builder all use.

    >>> check_range("m", (4, 64), layer=3, neuron=63)
    >>> check_range("m", (4, 64), layer=4)
    Traceback (most recent call last):
    ...
    store.errors.OutOfRange: layer 4 is out of range: m has layers 0-3

    Raises:
        OutOfRange: naming the index and the model's range.
    """
    n_layers, d_mlp = shape
    if layer is not None and not 0 <= layer < n_layers:
        raise OutOfRange(f"layer {layer} is out of range: {model} has layers 0-{n_layers - 1}")
    if neuron is not None and not 0 <= neuron < d_mlp:
        raise OutOfRange(f"neuron {neuron} is out of range: {model} has neurons 0-{d_mlp - 1} in each layer")
