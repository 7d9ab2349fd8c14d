"""Results other tools can take: a list answer as CSV or JSON lines, written under one folder.

In: the rows of a tool's answer (its structured content's list: ``results``, ``each``, ...) and
the pydantic type of one row. Out: the rows as text in an open format, with stable column names,
and a file under :func:`exports_dir` that a notebook, a spreadsheet or another server can open;
:func:`read_export` reads one back into the very rows it came from (the tests check that it
does). Nothing here knows about MCP (``n2g_mcp.tools.exports`` adds the ``format`` option and the
resource links).

Formats:

- ``jsonl``: one JSON object a line, exactly the row of the answer's structured content.
- ``csv``: a header of the row type's field names, in the order the type declares them (the
  columns are the answer's keys, so they change only when the answer's schema does); a text cell
  is the text itself, an empty cell is null, any other value (number, flag, list, object) is its
  JSON (``[" import", " from"]``), which spreadsheets show as written and ``json.loads`` reads.

>>> from pydantic import BaseModel
>>> class Row(BaseModel):
...     id: str
...     tokens: list[str]
...     f1: float | None
>>> text = to_csv([{"id": "L1/N2", "tokens": [" a", ","], "f1": 0.5}], Row)
>>> print(text.strip())
id,tokens,f1
L1/N2,"["" a"", "",""]",0.5
>>> rows_from_csv(text, Row)
[{'id': 'L1/N2', 'tokens': [' a', ','], 'f1': 0.5}]
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from store.errors import BadArgument, NotFound
from store.models import cache_dir

ExportFormat = Literal["text", "csv", "jsonl"]
"""How a list tool answers: as usual ('text'), or with its rows also as CSV or JSON lines."""
EXPORTS_ENV = "N2G_EXPORTS"
MIME = {"csv": "text/csv", "jsonl": "application/jsonl", "json": "application/json"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def exports_dir() -> Path:
    """Where exported answers are written: ``$N2G_EXPORTS``, else ``$N2G_CACHE/exports``
    (``~/.cache/n2g-mcp/exports``)."""
    return Path(os.environ[EXPORTS_ENV]) if os.environ.get(EXPORTS_ENV) else cache_dir() / "exports"


def _is_text(annotation: Any) -> bool:
    """Whether a field holds text (``str`` or ``str | None``): written as itself in CSV."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) == {str, type(None)}
    return False


def columns(row_type: type[BaseModel]) -> list[str]:
    """The CSV columns of a row type: its field names, in declaration order."""
    return list(row_type.model_fields)


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as JSON lines (UTF-8 text, one object a line)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def to_csv(rows: Sequence[dict[str, Any]], row_type: type[BaseModel]) -> str:
    """Rows as CSV under the row type's columns (see the module docstring for the cells)."""
    names = columns(row_type)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(n) is None else row[n] if isinstance(row[n], str)
                         else json.dumps(row[n], ensure_ascii=False) for n in names])
    return out.getvalue()


def rows_from_csv(text: str, row_type: type[BaseModel]) -> list[dict[str, Any]]:
    """The rows a :func:`to_csv` text holds, each value of the type it had."""
    fields = row_type.model_fields
    rows = []
    for cells in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {}
        for name, cell in cells.items():
            annotation = fields[name].annotation if name in fields else None
            if cell == "":
                row[name] = "" if annotation is str else None
            else:
                row[name] = cell if _is_text(annotation) else json.loads(cell)
        rows.append(row)
    return rows


def render(rows: Sequence[dict[str, Any]], row_type: type[BaseModel], fmt: Literal["csv", "jsonl"]) -> str:
    """The rows in ``fmt``."""
    return to_csv(rows, row_type) if fmt == "csv" else to_jsonl(rows)


def export_name(tool: str, model: str | None, arguments: dict[str, Any], extension: str) -> str:
    """A file name for one call's export: the tool, the model and a digest of the arguments, so
    the same call writes the same file.

    >>> export_name("search_graphs", "smollm2-135m", {"activating": [" import"]}, "csv")
    'search_graphs-smollm2-135m-380b56b20b.csv'
    """
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True, default=str).encode()).hexdigest()[:10]
    stem = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", part) for part in (tool, model or "model"))
    return f"{stem}-{digest}.{extension}"


def write_export(name: str, text: str, directory: Path | None = None) -> Path:
    """Write an export (through a temporary file) under ``directory`` (default :func:`exports_dir`)."""
    folder = directory or exports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def export_path(name: str, directory: Path | None = None) -> Path:
    """The file of an export named ``name`` (as ``export://{name}`` names it).

    Raises:
        BadArgument: for a name that is not a plain file name (no folders, no ``..``).
        NotFound: where no such export was written.
    """
    if not _NAME.match(name) or ".." in name:
        raise BadArgument(f"{name!r} is not an export's name; use the name an exported answer links to")
    path = (directory or exports_dir()) / name
    if not path.is_file():
        raise NotFound(f"no export named {name!r}; call a list tool with format='csv' or 'jsonl' to write one")
    return path


def read_export(path: Path, row_type: type[BaseModel]) -> list[dict[str, Any]]:
    """The rows of an exported CSV or JSON-lines file, as they stood in the answer."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return rows_from_csv(text, row_type)
    return [json.loads(line) for line in text.splitlines() if line.strip()]
