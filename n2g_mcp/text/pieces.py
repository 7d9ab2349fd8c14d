"""The pieces every message is made of: quoted tokens, counts, numbers, figures, calls."""


from __future__ import annotations

from collections.abc import Sequence

from store.metrics import Figures


# --------------------------------------------------------------------- pieces
def tok(token: str) -> str:
    """A token as the summaries show it: quoted, so leading spaces and newlines are visible."""
    return repr(token)


def tokens(items: Sequence[str], limit: int = 8) -> str:
    """Some quoted tokens, and how many more there are."""
    shown = ", ".join(tok(t) for t in list(items)[:limit])
    more = len(items) - limit
    return shown + (f" (+{more} more)" if more > 0 else "") if items else "none"


def count(n: int, noun: str) -> str:
    """``1 graph``, ``2 graphs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def figures(f: Figures | None) -> str:
    """Precision, recall, F1 and correlation on one line."""
    if f is None:
        return "not scored"
    return (f"precision {number(f.precision)}, recall {number(f.recall)}, "
            f"F1 {number(f.f1)}, correlation {number(f.correlation)}")


def call(tool: str, model: str, default_model: str, **args: object) -> str:
    """How to write a call to a tool, naming the model only where it is not the default."""
    parts = [f"{k}={v!r}" for k, v in args.items()]
    if model != default_model:
        parts.append(f"model={model!r}")
    return f"{tool}({', '.join(parts)})"


def with_warnings(text: str, warnings: Sequence[str]) -> str:
    return text + "".join(f"\nWarning: {w}" for w in warnings)
