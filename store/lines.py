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

from store.trie import NeuronTrie

Shape = tuple[int, int]
"""``(n_layers, d_mlp)`` of a model."""

_CHUNK = 1 << 16


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


def _token_map(raw: Any, field: str) -> list[str]:
    if not isinstance(raw, dict):
        raise LineError(f"{field} is not a map of tokens to numbers")
    for token, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LineError(f"{field}[{token[:20]!r}] is not a finite number")
    return list(raw)


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


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
    if raw.get("model") != model:
        raise LineError(f"a graph of model {str(raw.get('model'))[:80]!r} in a store of {model!r}")
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
    try:
        NeuronTrie.from_rows(raw["trie"])
    except (ValueError, TypeError) as exc:  # TrieFormatError is a ValueError
        raise LineError(f"trie: {str(exc)[:120]}") from None
    if raw["max_activation"] <= 0 and len(raw["trie"]) > 1:
        # A dead neuron's graph (no paths) may keep its non-positive max; a live one divides by it.
        raise LineError(f"max_activation is {raw['max_activation']:g}, but a graph with paths needs a positive one")
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
    return CheckedLine(layer, neuron, f1, activating, context, raw)
