"""The pieces every message is made of: quoted tokens, counts, numbers, figures, calls."""


from __future__ import annotations

from collections.abc import Sequence

from store.metrics import Figures


# --------------------------------------------------------------------- pieces
def tok(token: str) -> str:
    """A token as the summaries show it: quoted, so leading spaces and newlines are visible."""
    return repr(token)


def tokens(items: Sequence[str], limit: int = 8, total: int | None = None) -> str:
    """Some quoted tokens, and how many more there are: of ``total`` where ``items`` is itself
    cut from a longer list (a search hit keeps 8 of a graph's tokens), else of ``items``.

    >>> tokens([" a", " b", " c"], 2), tokens([" a", " b", " c"], 2, total=10)
    ("' a', ' b' (+1 more)", "' a', ' b' (+8 more)")
    """
    shown = ", ".join(tok(t) for t in list(items)[:limit])
    more = (len(items) if total is None else total) - min(limit, len(items))
    return shown + (f" (+{more} more)" if more > 0 else "") if items else "none"


def count(n: int, noun: str) -> str:
    """``1 graph``, ``2 graphs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``12th``, ``23rd``.

    >>> [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 102)]
    ['1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '102nd']
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


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
