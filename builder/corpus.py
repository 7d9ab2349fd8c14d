"""Corpora: texts in, fixed-length token windows out.

A corpus is the embedded default (``data/corpus/default.jsonl.gz``: English prose, source code
and dialogue; provenance in ``data/corpus/PROVENANCE.md``), a local ``.txt`` (one document),
``.jsonl``/``.jsonl.gz`` (a ``text`` field a line) or ``.parquet`` (a ``text`` column) file, or a
Hugging Face dataset name (online users).

Each document is tokenised on its own and cut into windows of ``window`` tokens; a tail shorter
than a window is dropped, so no window spans two documents.

The held-out split (issue 28). About a tenth of a corpus's documents are *held out*: no scan,
training window, calibration or method choice may read them; they exist to score graphs on
ordinary text the build never saw. A document is held out when the first 8 bytes of
``sha256(HELDOUT_SALT + key)``, read as a big-endian fraction of 2^64, fall below
``HELDOUT_SHARE``; its key is its ``source`` field (the embedded corpus names every document so:
``<registry>:<package><pin>/<path>#<chunk>``), else its text. The split therefore depends on
nothing but the document itself: it is the same on every machine and in every order, and adding
documents never moves another one across it. On the embedded corpus it holds out 40 of the 378
documents (9.6% of the characters: 20 prose, 12 code, 8 dialogue). It is by document, not by
source file: chunks of one long file (a play, a large module) can fall on both sides.
``make_windows(..., part="build")`` gives the windows of the other documents,
``part="heldout"`` those of the held-out ones, and :func:`heldout_mask` marks, among the windows
of the whole corpus (``part="all"``, what the shipped scans hold), those of held-out documents.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

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

HELDOUT_SHARE = 0.1
"""The share of documents (by hash, so about this share) held out from every build."""
HELDOUT_SALT = b"n2g-heldout-v1"
"""Salt of the held-out hash; a new salt is a new split (and makes old held-out figures moot)."""

Part = Literal["all", "build", "heldout"]


def heldout(key: str) -> bool:
    """Whether the document with this key (its ``source``, else its text) is held out.

    >>> heldout("pypi:flask==3.0.3/flask-3.0.3/src/flask/app.py#1")
    False
    >>> sum(heldout(f"doc {i}") for i in range(10_000))  # about HELDOUT_SHARE of them
    989
    """
    digest = hashlib.sha256(HELDOUT_SALT + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_SHARE


def _jsonl_texts(path: Path) -> Iterator[str]:
    for _, text in _jsonl_documents(path):
        yield text


def _jsonl_documents(path: Path) -> Iterator[tuple[str | None, str]]:
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
            source = record.get("source")
            yield (source if isinstance(source, str) else None), text


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


def iter_documents(corpus: str | Path | None = None) -> Iterator[tuple[bool, str]]:
    """The documents of a corpus, in order, each as ``(held out, text)`` (see the module
    docstring for the split).

    Raises:
        BadArgument: as :func:`iter_texts`.
    """
    path = resolve_corpus(corpus)
    if isinstance(path, Path) and "".join(path.suffixes[-2:]) in (".jsonl", ".jsonl.gz"):
        for source, text in _jsonl_documents(path):
            yield heldout(source if source is not None else text), text
    else:
        for text in iter_texts(corpus):
            yield heldout(text), text


def _document_windows(model: LoadedModel, corpus: str | Path | None,
                      window: int) -> Iterator[tuple[bool, np.ndarray]]:
    """Each document's windows ``(n, window)`` (n may be 0), with whether it is held out."""
    for held, text in iter_documents(corpus):
        ids = np.asarray(model.encode(text), dtype=np.int32)
        usable = len(ids) // window * window
        yield held, ids[:usable].reshape(-1, window)


def heldout_mask(model: LoadedModel, corpus: str | Path | None, window: int,
                 max_tokens: int | None = None) -> np.ndarray:
    """``(n_windows,)`` bool: which of ``make_windows(model, corpus, window, max_tokens)``'s
    windows (the whole corpus's, as the scans hold them) come from held-out documents."""
    marks = [np.full(len(rows), held) for held, rows in _document_windows(model, corpus, window)]
    mask = np.concatenate(marks) if marks else np.zeros(0, dtype=bool)
    return mask if max_tokens is None else mask[: max_tokens // window]


def make_windows(model: LoadedModel, corpus: str | Path | None, window: int,
                 max_tokens: int | None = None, part: Part = "all") -> np.ndarray:
    """Token windows of a corpus: ``(n_windows, window)`` int32.

    ``part`` keeps the windows of every document ("all", what scans and builds read today), of
    the build split only ("build": held-out documents left out) or of the held-out documents only
    ("heldout"); ``max_tokens`` counts the part's tokens.

    Raises:
        BadArgument: if the corpus yields no full window.
    """
    if max_tokens is not None and max_tokens < window:
        raise BadArgument(f"max_tokens {max_tokens} is less than one window of {window} tokens")
    rows: list[np.ndarray] = []
    total = 0
    for held, doc_rows in _document_windows(model, corpus, window):
        if (part == "build" and held) or (part == "heldout" and not held):
            continue
        usable = doc_rows.size
        if usable:
            rows.append(doc_rows)
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
