"""Stores on disk: JSON lines, a versioned header, then one neuron graph a line.

Line 1 is the header ``{"format": "n2g-store", "version": 2, "model": ..., "created": ...}``,
with the model's shape (``"n_layers"``, ``"d_mlp"``) where the writer knew it and, in version 2,
the scan file (``"scan": {"name", "windows_key"}``) that the lines' example references point into
(``store/examples.py``); every later line is a :class:`store.graph.NeuronGraph`. A store whose
lines hold only text examples is written as version 1, which older readers read too. A neuron written twice is read as its last line, so a rebuild
appends rather than rewrites. Files ending ``.gz`` are read transparently; they are written only
whole, by :func:`write_store`.

Reading never drops a line that parses and validates:

- a last line without its newline is kept when it is whole (a crash between a line and its
  newline, or a hand edit);
- a ``.gz`` file cut short or failing its checksum yields every line decoded before the damage;
- a UTF-8 byte-order mark before the header is ignored.

Every line is checked for its values as well as its form: finite numbers only, the header's
model, and a layer and neuron inside the model's shape (from the header, else from the caller).
A line that fails is skipped, and :attr:`Store.corrupt` says which line and why.

Writing: one :class:`StoreWriter` at a time holds an exclusive advisory lock (``flock``) on the
store file for its life; a second one waits up to ``wait`` seconds, then raises
:class:`Busy`. Readers take no lock: writers only append whole lines, in one write each,
then flush and fsync, so a crash loses at most the batch in flight. On opening, a writer repairs
a torn tail: it adds the missing newline to a whole last line, and cuts a last line only when it
is not JSON (a write cut off mid-line).
"""

from __future__ import annotations

import gzip
import logging
import os
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import orjson
from pydantic import BaseModel, Field, ValidationError

from store.errors import StoreError, StoreFormatError, StoreMismatch
from store.examples import ScanRef, has_refs
from store.graph import NeuronGraph
from store.lines import LineError, Shape, check_line, iter_lines
from store.locking import check_not_locked, lock
from store.names import NEURONS, split_units_key, units_key

log = logging.getLogger(__name__)

FORMAT = "n2g-store"
VERSION = 3
"""The newest store format version this code reads and writes.

Version 1 gained the optional header fields ``n_layers`` and ``d_mlp``; readers of version 1
ignore header fields they do not know, so old and new version-1 stores read both ways. Version 2
adds the header's ``scan`` and lets examples be references into it; a version-1 reader would
read references as broken examples, so a store holding them says version 2 (and one without a
scan says version 1, readable by both). Version 3 adds the header's ``units``: the dictionary whose
latents the graphs are (each line says it too); only such stores say version 3, so a neuron
store stays readable by version-2 readers."""


BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16


class StoreHeader(BaseModel):
    """The first line of every store."""

    format: Literal["n2g-store"] = FORMAT
    version: int = VERSION
    model: str
    created: str
    n_layers: int | None = Field(default=None, ge=1, description="layers of the model, where known")
    d_mlp: int | None = Field(default=None, ge=1, description="neurons per layer, where known")
    scan: ScanRef | None = Field(default=None, description="the scan file example references point "
                                 "into (version 2)")
    units: str | None = Field(default=None, description="the dictionary whose latents the graphs "
                              "are (version 3); absent: the model's neurons")

    @property
    def key(self) -> str:
        """The units key of its graphs: the model, or ``model@dictionary`` (``store.names.units_key``)."""
        return units_key(self.model, self.units)

    @property
    def shape(self) -> Shape | None:
        """``(n_layers, d_mlp)`` where the header records it."""
        return (self.n_layers, self.d_mlp) if self.n_layers and self.d_mlp else None


@dataclass(frozen=True)
class CorruptLine:
    """A line that was skipped (or a damaged stretch of a file), and why."""

    line: int
    reason: str


@dataclass
class Store:
    """A store read into memory: neuron graphs keyed by ``(layer, neuron)``."""

    path: Path
    header: StoreHeader
    graphs: dict[tuple[int, int], NeuronGraph] = field(default_factory=dict)
    corrupt: list[CorruptLine] = field(default_factory=list)
    shape: Shape | None = None
    """The model shape every line was checked against (None: layers and neurons unchecked)."""

    @property
    def model(self) -> str:
        """The units key every graph of this store belongs to (the model, for neurons)."""
        return self.header.key

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


# --------------------------------------------------------------------------- reading lines
def _first_line(path: Path) -> bytes:
    damage: list[str] = []
    for _, line, _ in iter_lines(path, damage):
        return line
    if damage:
        raise StoreFormatError(f"{path}: {damage[0].split(';')[0]} before the header")
    raise StoreFormatError(f"{path}: empty file, not an n2g store")


def _parse_header(line: bytes, path: Path) -> StoreHeader:
    try:
        raw = orjson.loads(line.removeprefix(BOM))
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
        raise StoreFormatError(f"{path}: invalid header: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _parse_graph(line: bytes, model: str, shape: Shape | None) -> NeuronGraph:
    """The graph of a line: the one line check (``store.lines.check_line``), then the whole
    record and its trie validated.

    Raises:
        LineError: saying why the line is not a graph of this store.
    """
    checked = check_line(line, model, shape)
    try:
        graph = NeuronGraph.model_validate(checked.raw)
        graph.graph  # noqa: B018 - validate the trie rows now, not at first use
    except ValidationError as exc:
        raise LineError(_first_error(exc)) from exc
    except ValueError as exc:
        raise LineError(f"trie: {exc}") from exc
    return graph


def read_header(path: str | os.PathLike[str]) -> StoreHeader:
    """Read only the header of a store.

    Raises:
        FileNotFoundError: if there is no such file.
        StoreFormatError: if it is not a store of a version this code reads.
    """
    path = Path(path)
    return _parse_header(_first_line(path), path)


def read_store(path: str | os.PathLike[str], shape: Shape | None = None,
               layers: Collection[int] | None = None) -> Store:
    """Read a whole store; lines that fail are skipped and listed in ``Store.corrupt``.

    Args:
        path: a ``.jsonl`` or ``.jsonl.gz`` store.
        shape: ``(n_layers, d_mlp)`` of the model, used where the header does not record it, so
            that a line with a layer or neuron the model lacks is skipped too.
        layers: only the graphs of these layers (None: all); other lines are passed over
            unchecked, so a few layers of a large store cost their own memory only.

    Raises:
        FileNotFoundError: if there is no such file.
        StoreFormatError: if the header is missing, unreadable or of a newer version.
    """
    path = Path(path)
    damage: list[str] = []
    lines = ((line, ended) for _, line, ended in iter_lines(path, damage))
    first = next(lines, None)
    if first is None or not first[0].strip():
        if damage:
            raise StoreFormatError(f"{path}: {damage[0].split(';')[0]} before the header")
        raise StoreFormatError(f"{path}: empty file, not an n2g store")
    header = _parse_header(first[0], path)
    store = Store(path=path, header=header, shape=header.shape or shape)
    number, torn = 1, False
    for number, (line, ended) in enumerate(lines, start=2):  # noqa: B007 - number is used below
        if not line.strip() or (layers is not None and _layer_of(line) not in layers):
            continue
        try:
            graph = _parse_graph(line, header.key, store.shape)
        except LineError as exc:
            torn = not ended
            reason = str(exc)[:200]
            if torn:
                reason = f"last line, without its newline, is cut short: {reason}"
            store.corrupt.append(CorruptLine(line=number, reason=reason))
            continue
        store.graphs[(graph.layer, graph.neuron)] = graph.with_scan(header.scan)
    if damage:
        if torn:  # the damage is what cut that line: report it once, at that line
            store.corrupt.pop()
        store.corrupt += [CorruptLine(line=number if torn else number + 1, reason=reason)
                          for reason in damage]
    return store


def _layer_of(line: bytes) -> int | None:
    """A graph line's layer, or None where the line does not say (read unchecked)."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return raw.get("layer") if isinstance(raw, dict) else None


def stored_neurons(path: str | os.PathLike[str], shape: Shape | None = None) -> set[tuple[int, int]]:
    """``(layer, neuron)`` of every line of a store that passes the line check
    (``store.lines.check_line``), without making the graphs: what a resumed build skips, at a
    small share of :func:`read_store`'s memory (a part of 33,600 calibrated graphs takes GBs as
    graphs).

    Raises:
        FileNotFoundError, StoreFormatError: as :func:`read_store`.
    """
    path = Path(path)
    header = read_header(path)
    out: set[tuple[int, int]] = set()
    lines = iter_lines(path, [])
    next(lines, None)  # the header
    for _, line, _ in lines:
        try:
            checked = check_line(line, header.key, header.shape or shape)
        except LineError:
            continue
        out.add((checked.layer, checked.neuron))
    return out


CORRUPT_SHOWN = 5
"""Skipped lines a report names for one file; the rest are counted."""


def corrupt_report(name: str, skipped: Sequence[tuple[int, str]], limit: int = CORRUPT_SHOWN) -> str:
    """A one-line report of the lines skipped in file ``name``, as ``(line, reason)`` pairs.

    >>> corrupt_report("m.jsonl", [(3, "not JSON"), (9, "torn")], limit=1)
    '2 corrupt line(s) skipped in m.jsonl: line 3 (not JSON) and 1 more'
    """
    shown = ", ".join(f"line {line} ({reason})" for line, reason in skipped[:limit])
    more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"{len(skipped)} corrupt line(s) skipped in {name}: {shown}{more}"


def describe_corrupt(store: Store, limit: int = CORRUPT_SHOWN) -> str:
    """A one-line report of skipped lines, or an empty string."""
    if not store.corrupt:
        return ""
    return corrupt_report(store.path.name, [(c.line, c.reason) for c in store.corrupt], limit)


# --------------------------------------------------------------------------- writing
def dumps(graph: NeuronGraph) -> bytes:
    """One store line (with its newline) for a graph; a neuron's line says no ``units`` (its
    lines stay as version-2 readers wrote them), a latent's names its dictionary."""
    raw = graph.model_dump(mode="json")
    if raw.get("units") == NEURONS:
        del raw["units"]
    return orjson.dumps(raw) + b"\n"


def _header_line(model: str, shape: Shape | None, scan: ScanRef | None = None) -> bytes:
    n_layers, d_mlp = shape if shape is not None else (None, None)
    model, units = split_units_key(model)
    version = 3 if units != NEURONS else 2 if scan is not None else 1
    header = StoreHeader(version=version, model=model, units=None if units == NEURONS else units,
                         created=datetime.now(UTC).isoformat(timespec="seconds"),
                         n_layers=n_layers, d_mlp=d_mlp, scan=scan)
    return orjson.dumps(header.model_dump(exclude_none=True)) + b"\n"


def _check_refs(graph: NeuronGraph, scan: ScanRef | None, path: Path) -> None:
    """Refuse a graph whose references a reader of this store could not resolve."""
    if scan is None and (has_refs(graph.examples) or has_refs(graph.pruned)):
        raise StoreMismatch(f"graph {graph.id} holds examples as scan references, but {path.name} names "
                            "no scan file; write its examples as text, or into a store written with one")


def scan_for(store_path: str | os.PathLike[str], scan_path: str | os.PathLike[str] | None,
             ref: ScanRef | None) -> ScanRef | None:
    """The scan a build into ``store_path`` may write example references against.

    ``ref`` (the scan file at ``scan_path``, which serves the build) where the store's readers will
    find that file: beside the store (where the server looks), or named by the header of the store
    as it is (a store begun against it, as scripts/build_atlas.sh begins its atlas); else None,
    and the examples go as text, which read anywhere.

    >>> scan_for("/tmp/elsewhere/s.jsonl", None, None) is None
    True
    """
    if ref is None or scan_path is None:
        return None
    store_path = Path(store_path)
    try:
        if os.path.samefile(store_path.with_name(ref.name), scan_path):
            return ref
    except OSError:  # nothing of that name beside the store
        pass
    try:
        header = read_header(store_path)
    except (OSError, StoreFormatError):  # a new (or empty) store
        return None
    return ref if header.scan == ref else None


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line.removeprefix(BOM)), dict)
    except orjson.JSONDecodeError:
        return False


class StoreWriter:
    """Appends graphs to a plain ``.jsonl`` store, creating it (with its header) if new.

    The writer holds an exclusive lock on the file until :meth:`close` (or ``with`` ends, or the
    writer is collected); see the module docstring.

    Args:
        path: the store.
        model: the model whose graphs it holds.
        shape: ``(n_layers, d_mlp)`` of the model: written into a new store's header, and checked
            against every graph appended.
        wait: seconds to wait for another writer to finish before giving up.
        scan: the scan file the caller's example references would point into; a new store names
            it in its header (version 2). :attr:`scan` says whether references may be written:
            it is the store's own scan where that is this one, else None (write text).

    Raises:
        Busy: if another writer holds the store for longer than ``wait``.
        StoreError: for a ``.gz`` path (compressed stores are written whole by
            :func:`write_store`), or an existing store of another model or shape.
    """

    def __init__(self, path: str | os.PathLike[str], model: str, shape: Shape | None = None,
                 wait: float = 0.0, scan: ScanRef | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise StoreError(
                f"{self.path} is compressed and read-only; build into a .jsonl store and "
                "compress it with `n2g store compact`"
            )
        self.model = model
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CREAT without O_TRUNC: two writers racing to create the file both open the same one,
        # and the lock decides which writes the header.
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._close = weakref.finalize(self, os.close, self._fd)
        try:
            lock(self._fd, self.path, wait)
            if os.fstat(self._fd).st_size == 0:
                self._write(_header_line(model, shape, scan))
                self.shape, self.scan = shape, scan
                self._store_scan = scan
            else:
                header = read_header(self.path)
                if header.key != model:
                    raise StoreMismatch(f"{self.path} holds graphs of {header.key}, not {model}")
                if shape is not None and header.shape not in (None, tuple(shape)):
                    raise StoreMismatch(f"{self.path} holds graphs of a model of shape {header.shape} "
                                     f"(layers, neurons), not {tuple(shape)}")
                self.shape = header.shape or shape
                self.scan: ScanRef | None = header.scan if scan is not None and header.scan == scan else None
                self._store_scan = header.scan
                self._repair_tail()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock and the file (appending after this fails)."""
        self._close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def _last_line_start(self, size: int) -> int:
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            cut = os.pread(self._fd, end - start, start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            end = start
        return 0

    def _repair_tail(self) -> None:
        """Make the file end with a newline, keeping a whole last line and cutting a torn one."""
        size = os.fstat(self._fd).st_size
        if os.pread(self._fd, 1, size - 1) == b"\n":
            return
        start = self._last_line_start(size)
        if _is_json_object(os.pread(self._fd, size - start, start)):
            log.warning("%s: its last line had no newline; added it", self.path)
            self._write(b"\n")
        else:
            log.warning("%s: cut %d bytes of a last line left unfinished by a crash", self.path,
                        size - start)
            os.ftruncate(self._fd, start)
            os.fsync(self._fd)

    def append(self, graphs: Iterable[NeuronGraph]) -> int:
        """Append graphs in one write, then fsync; returns how many were written.

        Raises:
            StoreError: for a graph a reader of this store would skip (another model, a layer or
                neuron outside the shape, an invalid trie) or could not read the examples of
                (references in a store without a scan); nothing is written then.
        """
        payload, count = bytearray(), 0
        for graph in graphs:
            _check_refs(graph, self._store_scan, self.path)
            line = dumps(graph)
            try:
                check_line(line, self.model, self.shape)  # the check every reader applies
            except LineError as exc:
                raise StoreMismatch(f"graph {graph.id} cannot go into {self.path.name}: {exc}") from exc
            payload += line
            count += 1
        if count:
            self._write(bytes(payload))
        return count


def write_store(path: str | os.PathLike[str], model: str, graphs: Iterable[NeuronGraph],
                shape: Shape | None = None, scan: ScanRef | None = None) -> int:
    """Write a whole store (``.gz`` compresses it, reproducibly), sorted by layer and neuron.

    Writes to a temporary file first and renames it, so a crash never leaves half a store.

    Args:
        scan: the scan file the graphs' example references point into (a version-2 header);
            None for a store of text examples only.

    Raises:
        Busy: if a writer is appending to ``path`` (it would keep appending to the
            replaced file, and its graphs would be lost).
        StoreMismatch: for references without a ``scan``.
    """
    path = Path(path)
    check_not_locked(path)
    ordered = sorted(graphs, key=lambda g: (g.layer, g.neuron))
    for graph in ordered:
        _check_refs(graph, scan, path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        out: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        out.write(_header_line(model, shape, scan))
        for graph in ordered:
            out.write(dumps(graph))
        if out is not raw:
            out.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    return len(ordered)
