"""A placed drawing (:class:`store.layout.Scene`) written as SVG text, with no Graphviz.

In: a scene. Out: a standalone SVG document (``to_svg``) whose text is real text (searchable,
selectable, readable in a page's DOM), tooltips as ``<title>``, every node a ``<g
class="node">`` and every edge a ``<path class="edge">``. The font is the reader's sans-serif,
so a browser draws it the same size the layout measured (``store.layout.estimate_width``).
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from store.graph import NeuronGraph
from store.layout import Box, Curve, Label, Scene, scene_of
from store.logitfile import OutputTokens
from store.render import NODES_DRAWN

FONT = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
ARROW = 7.0
"""Length of an edge's arrowhead."""


def _n(value: float) -> str:
    """A coordinate, short: ``12`` or ``12.5``."""
    return f"{value:.1f}".removesuffix(".0")


def _box(b: Box) -> str:
    attrs = f'fill="{b.fill}" stroke="{b.stroke}" stroke-width="{_n(b.stroke_width)}"'
    if b.dashed:
        attrs += ' stroke-dasharray="5,3"'
    if b.shape == "ellipse":
        shape = (f'<ellipse cx="{_n(b.x + b.w / 2)}" cy="{_n(b.y + b.h / 2)}" rx="{_n(b.w / 2)}" '
                 f'ry="{_n(b.h / 2)}" {attrs}/>')
    else:
        corner = ' rx="6"' if b.shape == "rounded" else ""
        shape = f'<rect x="{_n(b.x)}" y="{_n(b.y)}" width="{_n(b.w)}" height="{_n(b.h)}"{corner} {attrs}/>'
    tip = f"<title>{escape(b.tip)}</title>" if b.tip else ""
    return f'<g class="node">{tip}{shape}</g>'


def _label(lb: Label) -> str:
    style = (' font-weight="bold"' if lb.bold else "") + (' font-style="italic"' if lb.italic else "")
    # xml:space keeps a token's inner spaces; its edge spaces already show as '␣'.
    return (f'<text x="{_n(lb.x)}" y="{_n(lb.y)}" font-size="{_n(lb.size)}" fill="{lb.colour}" '
            f'text-anchor="{lb.anchor}" dominant-baseline="central" xml:space="preserve"{style}>'
            f"{escape(lb.text)}</text>")


def _curve(c: Curve) -> str:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = c.points
    return (f'<path class="edge" d="M{_n(x0)},{_n(y0)} C{_n(x1)},{_n(y1)} {_n(x2)},{_n(y2)} {_n(x3)},{_n(y3)}" '
            f'fill="none" stroke="{c.colour}" stroke-width="1.2" marker-end="url(#arrow)"/>')


def scene_svg(scene: Scene) -> str:
    """A scene as a standalone SVG document."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(scene.width)}" height="{_n(scene.height)}" '
        f'viewBox="0 0 {_n(scene.width)} {_n(scene.height)}" font-family={quoteattr(FONT)} role="img">',
        f"<title>{escape(scene.title)}</title>",
        f'<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="{_n(ARROW)}" '
        f'markerHeight="{_n(ARROW)}" markerUnits="userSpaceOnUse" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#666666"/></marker></defs>',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    parts += [_curve(c) for c in scene.curves]
    parts += [_box(b) for b in scene.boxes]
    parts += [_label(lb) for lb in scene.labels]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def to_svg(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN, output: OutputTokens | None = None) -> str:
    """A neuron graph drawn as SVG, with the DOT picture's content (``store.render.to_dot``).

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
    """
    return scene_svg(scene_of(graph, max_nodes=max_nodes, output=output))
