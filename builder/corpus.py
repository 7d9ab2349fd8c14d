"""Corpora: texts in, fixed-length token windows out.

A corpus is the embedded default (``data/corpus/default.jsonl.gz``: English prose, source code
and dialogue; provenance in ``data/corpus/PROVENANCE.md``), a local ``.txt`` (one document),
``.jsonl``/``.jsonl.gz`` (a ``text`` field a line) or ``.parquet`` (a ``text`` column) file, or a
Hugging Face dataset name (online users).

Each document is tokenised on its own and cut into windows of ``window`` tokens; a tail shorter
than a window is dropped, so no window spans two documents.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from builder.models import LoadedModel
from store.errors import BadArgument


def _default_corpus() -> Path:
    """``data/corpus/default.jsonl.gz`` of this checkout, else where a wheel installed it
    (``<prefix>/share/n2g-mcp/corpus``, pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[1] / "data" / "corpus" / "default.jsonl.gz"
    installed = Path(sys.prefix) / "share" / "n2g-mcp" / "corpus" / checkout.name
    return installed if not checkout.is_file() and installed.is_file() else checkout


DEFAULT_CORPUS = _default_corpus()


def _jsonl_texts(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BadArgument(f"{path}: line {number} is not JSON") from exc
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise BadArgument(f"{path}: line {number} has no string 'text' field")
            yield text


def _parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise BadArgument(f"{path}: no 'text' column (columns: {table.column_names})")
    yield from (t for t in table.column("text").to_pylist() if isinstance(t, str))


def _hub_texts(name: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError as exc:
        raise BadArgument(
            f"corpus {name!r} is not a local file; for a Hugging Face dataset install "
            "n2g-mcp[online]"
        ) from exc
    try:
        stream = datasets.load_dataset(name, split="train", streaming=True)
    except Exception as exc:  # the hub raises many kinds; all mean "not loadable here"
        raise BadArgument(f"corpus {name!r}: not a local file and not loadable from the hub ({exc})") from exc
    yield from (row["text"] for row in stream if isinstance(row.get("text"), str))


def resolve_corpus(corpus: str | Path | None) -> Path | str:
    """The corpus file, or a dataset name for the hub; checks files before any model loads.

    Raises:
        BadArgument: for a path that names no file.
    """
    if corpus is None:
        return DEFAULT_CORPUS
    path = Path(corpus).expanduser()
    if path.is_file():
        return path
    if path.suffix or str(corpus).startswith(("/", ".", "~")):
        raise BadArgument(f"corpus file not found: {path}")
    return str(corpus)


def iter_texts(corpus: str | Path | None = None) -> Iterator[str]:
    """The documents of a corpus, in order.

    Raises:
        BadArgument: for a missing file, an unknown format, or a record without text.
    """
    path = resolve_corpus(corpus)
    if isinstance(path, Path):
        suffixes = "".join(path.suffixes[-2:])
        if path.suffix == ".txt":
            yield path.read_text(encoding="utf-8", errors="replace")
        elif suffixes in (".jsonl", ".jsonl.gz"):
            yield from _jsonl_texts(path)
        elif path.suffix == ".parquet":
            yield from _parquet_texts(path)
        else:
            raise BadArgument(f"corpus {path}: unknown format; use .txt, .jsonl, .jsonl.gz or .parquet")
    else:
        yield from _hub_texts(path)


def make_windows(model: LoadedModel, corpus: str | Path | None, window: int,
                 max_tokens: int | None = None) -> np.ndarray:
    """Token windows of a corpus: ``(n_windows, window)`` int32.

    Raises:
        BadArgument: if the corpus yields no full window.
    """
    if max_tokens is not None and max_tokens < window:
        raise BadArgument(f"max_tokens {max_tokens} is less than one window of {window} tokens")
    rows: list[np.ndarray] = []
    total = 0
    for text in iter_texts(corpus):
        ids = np.asarray(model.encode(text), dtype=np.int32)
        usable = len(ids) // window * window
        if usable:
            rows.append(ids[:usable].reshape(-1, window))
            total += usable
        if max_tokens is not None and total >= max_tokens:
            break
    if not rows:
        raise BadArgument(f"corpus {corpus or DEFAULT_CORPUS} has no text of {window} tokens or more")
    windows = np.concatenate(rows)
    if max_tokens is not None:
        windows = windows[: max_tokens // window]
    return windows


def windows_key(windows: np.ndarray) -> str:
    """A short content hash naming a set of windows in the activation cache."""
    return hashlib.sha1(windows.tobytes()).hexdigest()[:12]
