"""The viewer's HTML pieces: the page shell, links, tables and text shaded token by token.

Everything a page shows is escaped here or in ``n2g_mcp.viewer.pages`` (tokens are outside text:
a corpus window may hold ``<script>``). Styles and the one script are static files of the
package (``n2g_mcp/viewer/static``), served by the viewer itself: no page loads anything from
another host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from n2g_mcp.viewer.links import model_path, neuron_path

_VISIBLE = {"\n": "↵\n", "\t": "⇥\t", "\r": "␍"}


def e(value: object) -> str:
    """Text escaped for HTML (quotes too, so it is safe inside an attribute)."""
    return escape(str(value), quote=True)


def page(title: str, body: str, *, crumbs: Sequence[tuple[str, str | None]] = (), script: bool = False) -> str:
    """A whole page: the shell, a breadcrumb line of ``(text, href)`` and the body."""
    trail = " › ".join(f'<a href="{e(href)}">{e(text)}</a>' if href else e(text) for text, href in crumbs)
    js = f'<script src="/static/predict.js" defer></script>' if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{e(title)} · n2g viewer</title><link rel="stylesheet" href="/static/viewer.css">{js}'
            f'</head><body><header><a class="brand" href="/">n2g viewer</a> <nav>{trail}</nav></header>'
            f"<main>{body}</main></body></html>\n")


def model_link(model: str) -> str:
    return f'<a href="{e(model_path(model))}">{e(model)}</a>'


def neuron_link(model: str, layer: int, neuron: int, text: str | None = None) -> str:
    return f'<a href="{e(neuron_path(model, layer, neuron))}">{e(text or f"L{layer}/N{neuron}")}</a>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of cells already made HTML (escape what goes in)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{e(cls)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def number(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def shade(value: float | None) -> str:
    """The background of a token at a normalised activation: transparent at 0, deep red at 1."""
    if value is None or value <= 0:
        return ""
    return f"background: rgba(255, 64, 32, {min(value, 1.0) * 0.85:.3f})"


def shaded_text(tokens: Sequence[str], shades: Sequence[float | None], pivot: int | None = None) -> str:
    """A text token by token, each shaded by its activation (``data-act``, a share of the
    neuron's max), the pivot marked; newlines and tabs show as ↵ and ⇥ and still break."""
    spans = []
    for i, (token, value) in enumerate(zip(tokens, shades, strict=True)):
        shown = "".join(_VISIBLE.get(ch, ch) for ch in token) or "∅"
        classes = "tok" + (" pivot" if i == pivot else "")
        act = "" if value is None else f' data-act="{value:.3f}"'
        tip = "not measured" if value is None else f"{value:.2f} of max"
        spans.append(f'<span class="{classes}"{act} style="{shade(value)}" title="{e(repr(token))}: {tip}">'
                     f"{e(shown)}</span>")
    return f'<div class="text">{"".join(spans)}</div>'
