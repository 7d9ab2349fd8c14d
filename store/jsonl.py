"""Stores on disk: JSON lines, a versioned header, then one neuron graph a line.

Line 1 is the header ``{"format": "n2g-store", "version": 1, "model": ..., "created": ...}``;
every later line is a :class:`store.graph.NeuronGraph`. A neuron written twice is read as its
last line, so a rebuild appends rather than rewrites. A reader skips lines that do not parse or
validate, counts them and says which (a store cut off mid-line by a crash still loads). Files
ending ``.gz`` are read transparently; they are written only whole, by :func:`write_store`.

Writers append whole lines in one write, then flush and fsync: a crash loses at most the batch in
flight, and a partial last line left by a crash is cut off the next time a writer opens the file.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import orjson
from pydantic import BaseModel, ValidationError

from store.graph import NeuronGraph

FORMAT = "n2g-store"
VERSION = 1
"""The store format version this code writes and the newest it reads."""


class StoreError(Exception):
    """A store that cannot be used as asked."""


class StoreFormatError(StoreError, ValueError):
    """A file that is not a store this code can read."""


class StoreHeader(BaseModel):
    """The first line of every store."""

    format: Literal["n2g-store"] = FORMAT
    version: int = VERSION
    model: str
    created: str


@dataclass(frozen=True)
class CorruptLine:
    """A line that was skipped, and why."""

    line: int
    reason: str


@dataclass
class Store:
    """A store read into memory: neuron graphs keyed by ``(layer, neuron)``."""

    path: Path
    header: StoreHeader
    graphs: dict[tuple[int, int], NeuronGraph] = field(default_factory=dict)
    corrupt: list[CorruptLine] = field(default_factory=list)

    @property
    def model(self) -> str:
        """The model every graph of this store belongs to."""
        return self.header.model

    def get(self, layer: int, neuron: int) -> NeuronGraph | None:
        """The graph of one neuron, or None."""
        return self.graphs.get((layer, neuron))

    def __len__(self) -> int:
        return len(self.graphs)

    def __iter__(self) -> Iterator[NeuronGraph]:
        return iter(self.graphs.values())

    def layers(self) -> list[int]:
        """The layers that have at least one graph."""
        return sorted({layer for layer, _ in self.graphs})


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(line: bytes, path: Path) -> StoreHeader:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise StoreFormatError(f"{path}: line 1 is not JSON, so this is not an n2g store") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StoreFormatError(f"{path}: line 1 is not an n2g-store header")
    version = raw.get("version")
    if not isinstance(version, int) or version < 1:
        raise StoreFormatError(f"{path}: header has no valid version: {version!r}")
    if version > VERSION:
        raise StoreFormatError(
            f"{path}: store format version {version} is newer than this n2g-mcp reads "
            f"(up to {VERSION}); upgrade n2g-mcp"
        )
    try:
        return StoreHeader.model_validate(raw)
    except ValidationError as exc:
        raise StoreFormatError(f"{path}: invalid header: {exc.errors()[0]['msg']}") from exc


def read_header(path: str | os.PathLike[str]) -> StoreHeader:
    """Read only the header of a store.

    Raises:
        FileNotFoundError: if there is no such file.
        StoreFormatError: if it is not a store of a version this code reads.
    """
    path = Path(path)
    with _open(path) as f:
        return _parse_header(f.readline(), path)


def read_store(path: str | os.PathLike[str]) -> Store:
    """Read a whole store; corrupt lines are skipped and listed in ``Store.corrupt``.

    Raises:
        FileNotFoundError: if there is no such file.
        StoreFormatError: if the header is missing, unreadable or of a newer version.
    """
    path = Path(path)
    with _open(path) as f:
        first = f.readline()
        if not first.strip():
            raise StoreFormatError(f"{path}: empty file, not an n2g store")
        store = Store(path=path, header=_parse_header(first, path))
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                graph = NeuronGraph.model_validate(orjson.loads(line))
                graph.graph  # noqa: B018 - validate the trie rows now, not at first use
            except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
                reason = str(exc).splitlines()[0][:200]
                store.corrupt.append(CorruptLine(line=number, reason=reason))
                continue
            store.graphs[(graph.layer, graph.neuron)] = graph
    return store


def dumps(graph: NeuronGraph) -> bytes:
    """One store line (with its newline) for a graph."""
    return orjson.dumps(graph.model_dump(mode="json")) + b"\n"


def _header_line(model: str) -> bytes:
    header = StoreHeader(model=model, created=datetime.now(UTC).isoformat(timespec="seconds"))
    return orjson.dumps(header.model_dump()) + b"\n"


class StoreWriter:
    """Appends graphs to a plain ``.jsonl`` store, creating it (with its header) if new.

    Raises:
        StoreError: for a ``.gz`` path (compressed stores are written whole by
            :func:`write_store`), or an existing store of another model.
    """

    def __init__(self, path: str | os.PathLike[str], model: str) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise StoreError(
                f"{self.path} is compressed and read-only; build into a .jsonl store and "
                "compress it with `n2g store compact`"
            )
        self.model = model
        if self.path.exists() and self.path.stat().st_size > 0:
            header = read_header(self.path)
            if header.model != model:
                raise StoreError(f"{self.path} holds graphs of {header.model}, not {model}")
            self._cut_partial_line()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.write(_header_line(model))
                f.flush()
                os.fsync(f.fileno())

    def _cut_partial_line(self) -> None:
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            # Walk back to the last complete line; what follows it was cut off mid-write.
            block, end = 1 << 16, size
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    f.truncate(start + cut + 1)
                    return
                end = start
            raise StoreFormatError(f"{self.path}: no complete header line")

    def append(self, graphs: Iterable[NeuronGraph]) -> int:
        """Append graphs in one write, then flush and fsync; returns how many were written."""
        payload, count = bytearray(), 0
        for graph in graphs:
            if graph.model != self.model:
                raise StoreError(f"graph {graph.id} is of {graph.model}, this store holds {self.model}")
            payload += dumps(graph)
            count += 1
        if count:
            with open(self.path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        return count


def write_store(path: str | os.PathLike[str], model: str, graphs: Iterable[NeuronGraph]) -> int:
    """Write a whole store (``.gz`` compresses it, reproducibly), sorted by layer and neuron.

    Writes to a temporary file first and renames it, so a crash never leaves half a store.
    """
    path = Path(path)
    ordered = sorted(graphs, key=lambda g: (g.layer, g.neuron))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        out: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        out.write(_header_line(model))
        for graph in ordered:
            out.write(dumps(graph))
        if out is not raw:
            out.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return len(ordered)


def describe_corrupt(store: Store, limit: int = 5) -> str:
    """A one-line report of skipped lines, or an empty string."""
    if not store.corrupt:
        return ""
    shown = ", ".join(f"line {c.line} ({c.reason})" for c in store.corrupt[:limit])
    more = f" and {len(store.corrupt) - limit} more" if len(store.corrupt) > limit else ""
    return f"{len(store.corrupt)} corrupt line(s) skipped in {store.path.name}: {shown}{more}"
