"""Reading a store file line by line, and the one check every stored line passes.

:func:`iter_lines` is the one reader of store files: plain ``.jsonl`` from any byte offset, or
``.jsonl.gz`` decompressed incrementally, so that a compressed file cut short or failing its
checksum has yielded every line decoded before the damage (which is then reported). A last line
without its newline is yielded too, marked, so that a reader can tell a whole last line from one
cut off mid-write.

:func:`check_line` is the one check of a graph line: a JSON object of the store's model, with
non-negative integer layer and neuron inside the model's shape, token maps of finite numbers, a
finite ``max_activation`` (positive where the trie has paths: activations are divided by it), a
trie whose rows make a trie (``store.trie.NeuronTrie.from_rows``: every parent precedes its
child), and a finite or null F1. The index (``store.sqlindex``) keeps what it extracts, so a line
it lists can be read; a full read (``store.jsonl.read_store``) validates the whole graph after it.
:func:`index_line` is the same check for the index, made fast: the whole line's JSON is checked,
but only the fields the index keeps become Python objects (a line it cannot take so is handed to
:func:`check_line`, which accepts it or says why not).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from store.names import units_key
from store.trie import NeuronTrie

Shape = tuple[int, int]
"""``(n_layers, d_mlp)`` of a model."""

_CHUNK = 1 << 20


def _key(raw: dict[str, Any]) -> str:
    """The units key a line's graph belongs to: its model, or ``model@units`` for a latent."""
    return units_key(str(raw.get("model")), raw.get("units"))


class LineError(ValueError):
    """A store line that is not a valid graph of its store; the message says why."""


def iter_lines(path: Path, damage: list[str], start: int = 0) -> Iterator[tuple[int, bytes, bool]]:
    """``(offset, line, ended)`` for each line from byte ``start``, the newline stripped;
    ``ended`` is False only for a last line without its newline.

    A ``.gz`` file is always read from its start (offsets count decompressed bytes); where its
    stream is cut short or damaged, the error is appended to ``damage`` and the lines stop before
    the line it cut.
    """
    compressed = path.name.endswith(".gz")
    with open(path, "rb") as raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        if not compressed:
            raw.seek(start)
        offset = 0 if compressed else start
        pending = b""
        try:
            while chunk := stream.read1(_CHUNK):  # type: ignore[attr-defined]
                *whole, pending = (pending + chunk).split(b"\n")
                for line in whole:
                    yield offset, line, True
                    offset += len(line) + 1
        except EOFError:
            damage.append("the compressed file is cut short here; the lines before it were kept")
            return  # what was decoded of the next line is part of the damage
        except (gzip.BadGzipFile, zlib.error) as exc:
            damage.append(f"the compressed data is damaged here ({exc}); the lines before it were kept")
            return
        if pending:
            yield offset, pending, False


@dataclass(frozen=True)
class CheckedLine:
    """What the check extracts from a graph line (all the index keeps of it)."""

    layer: int
    neuron: int
    f1: float | None
    activating: list[str]
    context: list[str]
    raw: dict[str, Any]
    """The parsed line."""
    ordinary: tuple[float | None, float | None] = (None, None)
    """F1 and correlation on held-out documents (``fidelity.heldout.n2g.tokens``), where scored."""


def _token_map(raw: Any, field: str) -> list[str]:
    if not isinstance(raw, dict):
        raise LineError(f"{field} is not a map of tokens to numbers")
    for token, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LineError(f"{field}[{token[:20]!r}] is not a finite number")
    return list(raw)


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check_trie(raw: dict[str, Any]) -> None:
    """The checks of a line's trie rows and its max activation that a later read relies on: the
    rows make a trie (``NeuronTrie.from_rows``), and a graph with paths has a positive max (its
    activations are divided by it; a dead neuron's graph, with none, may keep 0 or below)."""
    try:
        NeuronTrie.from_rows(raw["trie"])
    except (ValueError, TypeError) as exc:  # TrieFormatError is a ValueError
        raise LineError(f"trie: {str(exc)[:120]}") from None
    if raw["max_activation"] <= 0 and len(raw["trie"]) > 1:
        raise LineError(f"max_activation is {raw['max_activation']:g}, but a graph with paths needs a positive one")


def check_line(line: bytes, model: str, shape: Shape | None) -> CheckedLine:
    """Check a graph line for what every reader relies on, and extract it.

    Raises:
        LineError: for a line that does not parse or fails a check (the message says which).
    """
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(raw, dict):
        raise LineError("not a JSON object")
    if not isinstance(raw.get("model"), str) or _key(raw) != model:
        raise LineError(f"a graph of model {str(_key(raw))[:80]!r} in a store of {model!r}")
    layer, neuron = raw.get("layer"), raw.get("neuron")
    for name, value in (("layer", layer), ("neuron", neuron)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LineError(f"{name} is not a non-negative integer")
    if shape is not None and layer >= shape[0]:
        raise LineError(f"layer {layer} is outside {model} (layers 0-{shape[0] - 1})")
    if shape is not None and neuron >= shape[1]:
        raise LineError(f"neuron {neuron} is outside {model} (neurons 0-{shape[1] - 1})")
    if not _finite_number(raw.get("max_activation")):
        raise LineError("max_activation is not a finite number")
    if not isinstance(raw.get("trie"), list):
        raise LineError("trie is missing")
    _check_trie(raw)
    activating = _token_map(raw.get("activating_tokens", {}), "activating_tokens")
    context = _token_map(raw.get("context_tokens", {}), "context_tokens")
    f1 = None
    fidelity = raw.get("fidelity")
    if fidelity is not None:
        try:
            f1 = fidelity["n2g"]["top"]["f1"]
        except (KeyError, TypeError):
            raise LineError("fidelity has no n2g.top.f1") from None
        if f1 is not None and (isinstance(f1, bool) or not isinstance(f1, int | float)):
            raise LineError("fidelity n2g.top.f1 is not a finite number")
        if f1 is not None and not math.isfinite(f1):
            f1 = None  # NaN says as little as a missing score
    return CheckedLine(layer, neuron, f1, activating, context, raw, _ordinary(fidelity))


def _ordinary(fidelity: Any) -> tuple[float | None, float | None]:
    """F1 and correlation on held-out documents of a line's fidelity, None where absent or not a
    finite number (a figure the index ranks by must be one)."""
    try:
        tokens = fidelity["heldout"]["n2g"]["tokens"]
    except (KeyError, TypeError):
        return None, None
    if not isinstance(tokens, dict):
        return None, None
    return tuple(v if _finite_number(v) else None for v in (tokens.get("f1"), tokens.get("correlation")))


# ----------------------------------------------------------------- the index's fast check
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


class _Top(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    f1: float | None


class _Protocol(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    top: _Top


class _Fidelity(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    n2g: _Protocol
    heldout: NotRequired[Any]
    """Read by :func:`_ordinary` (older lines have none)."""


class _Line(TypedDict, total=False):
    """The fields of a graph line the index keeps, strictly typed: what validates here passes
    :func:`check_line` with the same values (the other fields are parsed, not kept)."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    model: str
    units: str
    layer: int
    neuron: int
    max_activation: float
    activating_tokens: dict[str, float]
    context_tokens: dict[str, float]
    trie: list[Any]
    fidelity: _Fidelity | None


_REQUIRED = ("model", "layer", "neuron", "max_activation", "trie")
_LINE = TypeAdapter(_Line)


@dataclass(frozen=True)
class IndexedLine:
    """What the index keeps of a checked graph line."""

    layer: int
    neuron: int
    f1: float | None
    activating: dict[str, float]
    """Activating tokens and their activations, as stored (strongest first)."""
    context: list[str]
    ordinary: tuple[float | None, float | None] = (None, None)
    """F1 and correlation on held-out documents, where scored (:class:`CheckedLine`)."""


def index_line(line: bytes, model: str, shape: Shape | None) -> IndexedLine:
    """:func:`check_line` for the index, about eight times faster on a well-formed line: the JSON is
    validated whole, but only the fields the index keeps are built. A line the fast path cannot
    take (a damaged one, or an unusual but valid one such as a NaN F1) goes through
    :func:`check_line`, so both accept the same lines with the same values and fail with its
    messages.

    Raises:
        LineError: for a line that does not parse or fails a check (the message says which).
    """
    raw = None
    # The fast parser takes NaN and Infinity where the line's other fields hold them; the JSON
    # reader does not (a token spelled so only costs the slow path).
    if b"NaN" not in line and b"Infinity" not in line:
        try:
            raw = _LINE.validate_json(line)
        except ValidationError:
            pass
    if raw is None or any(field not in raw for field in _REQUIRED) or _key(raw) != model \
            or raw["layer"] < 0 or raw["neuron"] < 0 \
            or (shape is not None and (raw["layer"] >= shape[0] or raw["neuron"] >= shape[1])):
        checked = check_line(line, model, shape)  # says why, or accepts what the fast path does not
        return IndexedLine(checked.layer, checked.neuron, checked.f1,
                           dict(checked.raw.get("activating_tokens", {})), checked.context, checked.ordinary)
    _check_trie(raw)  # what a later read of the line relies on, as check_line checks it
    fidelity = raw.get("fidelity")
    return IndexedLine(raw["layer"], raw["neuron"], None if fidelity is None else fidelity["n2g"]["top"]["f1"],
                       raw.get("activating_tokens", {}), list(raw.get("context_tokens", {})), _ordinary(fidelity))
