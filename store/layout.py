"""A neuron graph's drawing placed on a page, with no Graphviz: boxes, text and curves.

In: a :class:`store.graph.NeuronGraph` (drawn as :func:`store.render.layout` chooses: the
strongest paths up to ``max_nodes``, IGNOREs removed, tokens merged per depth). Out: a
:class:`Scene` of positioned primitives that ``store.svg`` writes as SVG and ``store.png``
paints as PNG, with the content of the DOT picture (``store.render.to_dot``): title, legend,
nodes coloured and numbered, bold path ends, dashed green repeat ellipses, ``… n`` on edges, and
the activating tokens that fire in any context in one table.

The drawn graph is a trie with tokens merged per depth, so every edge joins neighbouring
columns (context at depth ``d + 1`` to the token at depth ``d``). Columns run left to right in
text order (the deepest context on the left, the activating tokens on the right). Within a
column, nodes are ordered by the mean place of their neighbours in the column before (the
barycentre rule of layered drawing) and then placed as a tidy tree: each node as near as the
column allows to the mean height of what it links to, first right to left (contexts beside
their activating token), then left to right (activating tokens centred on their contexts).

Text widths come from a ``measure(text, size)`` callable: an estimate of a sans-serif font for
SVG (:func:`estimate_width`), the real font for PNG, so boxes fit their text in both.
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from store.graph import NeuronGraph
from store.logitfile import OutputTokens
from store.render import (
    LEGEND_WIDTH,
    LOOSE_COLUMNS,
    NODES_DRAWN,
    REPEAT_LABEL,
    DrawnNode,
    Drawing,
    display_token,
    fill,
    has_repeat,
    layout,
    legend_rows,
    loose_nodes,
    node_tip,
    skip_label,
    text_colour,
    title_lines,
)
from store.tokens import REPEAT_KEY

Measure = Callable[[str, float], float]
"""Width in pixels of a text at a font size."""

TOKEN_SIZE = 14.0
"""Font size of a node's token."""
NUMBER_SIZE = 11.0
"""Font size of a node's number, the legend and edge labels."""
TITLE_SIZE = 15.0
PAD = 8.0
"""Space around a box's text, and the page's margin beside it."""
COLUMN_GAP = 56.0
"""Horizontal space between columns, where edges and their '… n' labels run."""
ROW_GAP = 10.0
"""Least vertical space between two nodes of a column."""
LINE = 1.3
"""Line height as a share of the font size."""


@dataclass(frozen=True)
class Box:
    """A filled shape: a node, a table cell or a legend sample."""

    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str = "black"
    stroke_width: float = 1.0
    shape: Literal["rounded", "rect", "ellipse"] = "rounded"
    dashed: bool = False
    tip: str | None = None
    """A tooltip (SVG only)."""


@dataclass(frozen=True)
class Label:
    """A line of text, placed by its vertical centre."""

    x: float
    y: float
    text: str
    size: float = NUMBER_SIZE
    colour: str = "black"
    bold: bool = False
    italic: bool = False
    anchor: Literal["start", "middle"] = "middle"


@dataclass(frozen=True)
class Curve:
    """A cubic Bézier edge from context to activating side, with an arrowhead at its end."""

    points: tuple[tuple[float, float], ...]
    """Start, two control points, end."""
    colour: str = "#666666"


@dataclass
class Scene:
    """Everything a picture shows, placed; ``width`` and ``height`` in pixels."""

    width: float = 0.0
    height: float = 0.0
    title: str = ""
    boxes: list[Box] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)


# --------------------------------------------------------------------- text widths
def estimate_width(text: str, size: float) -> float:
    """An estimate of a text's width in a sans-serif font (Helvetica's, Arial's metrics roughly):
    wide East Asian characters a full em, narrow letters a third, most others a little over half.

    >>> estimate_width("il", 10) < estimate_width("MW", 10) < estimate_width("漢字", 10)
    True
    """
    em = 0.0
    for ch in text:
        if unicodedata.east_asian_width(ch) in ("W", "F"):
            em += 1.0
        elif ch in "iljI.,:;'|!() ␣[]ft":
            em += 0.33
        elif ch in "MWmw@%":
            em += 0.86
        elif ch.isupper():
            em += 0.68
        else:
            em += 0.57
    return em * size


def _line_height(size: float) -> float:
    return size * LINE


# --------------------------------------------------------------------- placing nodes
def _order(columns: list[list[DrawnNode]], edges: frozenset[tuple[DrawnNode, DrawnNode]],
           weights: dict[DrawnNode, float]) -> list[list[DrawnNode]]:
    """Each column's nodes in drawing order: activating tokens strongest first, then each deeper
    column by the mean place of the tokens it leads to (the barycentre rule)."""
    into: dict[DrawnNode, list[DrawnNode]] = {}
    for src, dst in edges:
        into.setdefault(src, []).append(dst)
    ordered = [sorted(columns[0], key=lambda n: (-weights[n], n))] if columns else []
    for column in columns[1:]:
        place = {n: i for i, n in enumerate(ordered[-1])}
        centre = {n: sum(place[d] for d in into.get(n, [])) / max(len(into.get(n, [])), 1) for n in column}
        ordered.append(sorted(column, key=lambda n: (centre[n], -weights[n], n)))
    return ordered


def _settle(tops: list[float], heights: list[float], wanted: list[float]) -> list[float]:
    """Tops of a column's boxes, in their order, as near as may be to the centres ``wanted``
    without overlapping: pushed down where they collide, then the column moved as a whole so
    that it sits, on average, where it wanted to."""
    out: list[float] = []
    bottom = -math.inf
    for h, want in zip(heights, wanted, strict=True):
        top = max(want - h / 2, bottom + ROW_GAP)
        out.append(top)
        bottom = top + h
    shift = sum(w - (t + h / 2) for t, h, w in zip(out, heights, wanted, strict=True)) / max(len(out), 1)
    return [t + shift for t in out]


@dataclass(frozen=True)
class _Node:
    node: DrawnNode
    w: float
    h: float


def _node_size(node: DrawnNode, weight: float, measure: Measure) -> _Node:
    text = REPEAT_LABEL if node[1] == REPEAT_KEY else display_token(node[1])
    w = max(measure(text, TOKEN_SIZE), measure(f"{weight:.2f}", NUMBER_SIZE)) + 2 * PAD
    h = _line_height(TOKEN_SIZE) + _line_height(NUMBER_SIZE) + PAD
    if node[1] == REPEAT_KEY:  # an ellipse needs room at its ends
        w, h = w * 1.25, h * 1.1
    return _Node(node, max(w, 36.0), h)


def _place(columns: list[list[_Node]], edges: frozenset[tuple[DrawnNode, DrawnNode]]) -> dict[DrawnNode, float]:
    """Each node's top, a tidy tree: stacked, then centred on its contexts, then its contexts on it."""
    links: dict[DrawnNode, list[DrawnNode]] = {}
    for src, dst in edges:
        links.setdefault(src, []).append(dst)
        links.setdefault(dst, []).append(src)
    top: dict[DrawnNode, float] = {}
    for column in columns:  # a first stacking, so every node has a place
        y = 0.0
        for n in column:
            top[n.node], y = y, y + n.h + ROW_GAP
    size = {n.node: n.h for column in columns for n in column}

    def centre(node: DrawnNode) -> float:
        return top[node] + size[node] / 2

    def sweep(order: list[list[_Node]]) -> None:
        for k, column in enumerate(order):
            if k == 0:
                continue
            done = {n.node for n in order[k - 1]}
            wanted = []
            for n in column:
                near = [centre(m) for m in links.get(n.node, []) if m in done]
                wanted.append(sum(near) / len(near) if near else centre(n.node))
            for n, t in zip(column, _settle([top[n.node] for n in column], [n.h for n in column], wanted),
                            strict=True):
                top[n.node] = t

    sweep(columns[::-1])  # deepest context first: each activating token centred on its contexts
    sweep(columns)  # then contexts beside the tokens they lead to
    return top


# --------------------------------------------------------------------- the page
def _title_and_legend(scene: Scene, title: list[str], repeat: bool, measure: Measure) -> float:
    """Write the title and legend at the top left; return the height they take."""
    y = PAD
    for i, line in enumerate(title):
        size = TITLE_SIZE if i == 0 else NUMBER_SIZE + 1
        scene.labels.append(Label(PAD, y + _line_height(size) / 2, line, size, bold=i == 0, anchor="start"))
        y += _line_height(size)
    y += PAD / 2
    sample_w = measure("token", NUMBER_SIZE) + 2 * PAD
    for sample, meaning in legend_rows(repeat):
        lines = textwrap.wrap(meaning, LEGEND_WIDTH)
        h = max(len(lines), 2) * _line_height(NUMBER_SIZE) + 4
        if sample.startswith("#") or sample == "bold":
            scene.boxes.append(Box(PAD, y, sample_w, h - 2, "white" if sample == "bold" else sample,
                                   stroke_width=3.0 if sample == "bold" else 1.0, shape="rect"))
            scene.labels.append(Label(PAD + sample_w / 2, y + h / 2 - 1, "token"))
        else:
            scene.labels.append(Label(PAD + sample_w / 2, y + h / 2, sample, NUMBER_SIZE + 2))
        first = y + (h - len(lines) * _line_height(NUMBER_SIZE)) / 2  # the text centred on its sample
        for j, line in enumerate(lines):
            scene.labels.append(Label(2 * PAD + sample_w, first + (j + 0.5) * _line_height(NUMBER_SIZE), line,
                                      anchor="start"))
        y += h + 3
    return y + PAD


def _node_shapes(scene: Scene, n: _Node, x: float, y: float, weight: float, end: bool) -> None:
    node = n.node
    repeat = node[1] == REPEAT_KEY
    scene.boxes.append(Box(x, y, n.w, n.h, fill(node, weight), stroke_width=3.0 if end else 1.0,
                           shape="ellipse" if repeat else "rounded", dashed=repeat, tip=node_tip(node, weight)))
    colour = text_colour(node, weight)
    middle = x + n.w / 2
    token_y = y + PAD / 2 + _line_height(TOKEN_SIZE) / 2
    scene.labels.append(Label(middle, token_y, REPEAT_LABEL if repeat else display_token(node[1]),
                              TOKEN_SIZE, colour))
    scene.labels.append(Label(middle, token_y + (_line_height(TOKEN_SIZE) + _line_height(NUMBER_SIZE)) / 2,
                              f"{weight:.2f}", NUMBER_SIZE, colour))


def _table(scene: Scene, loose: list[DrawnNode], weights: dict[DrawnNode, float], x: float, y: float,
           measure: Measure) -> tuple[float, float]:
    """The loose activating tokens as one table at (x, y), :data:`LOOSE_COLUMNS` a row; its size."""
    head = f"fire in any context ({len(loose)}; each ends a path)"
    scene.labels.append(Label(x, y + _line_height(NUMBER_SIZE) / 2, head, italic=True, anchor="start"))
    y0 = y + _line_height(NUMBER_SIZE) + 4
    cell_w = max(max(measure(display_token(n[1]), TOKEN_SIZE - 1) for n in loose), measure("0.00", NUMBER_SIZE)) \
        + 2 * PAD
    cell_h = _line_height(TOKEN_SIZE - 1) + _line_height(NUMBER_SIZE) + PAD / 2
    for i, n in enumerate(loose):
        cx, cy = x + (i % LOOSE_COLUMNS) * (cell_w + 3), y0 + (i // LOOSE_COLUMNS) * (cell_h + 3)
        scene.boxes.append(Box(cx, cy, cell_w, cell_h, fill(n, weights[n]), stroke_width=2.0, shape="rect",
                               tip=node_tip(n, weights[n])))
        mid = cx + cell_w / 2
        scene.labels.append(Label(mid, cy + PAD / 4 + _line_height(TOKEN_SIZE - 1) / 2, display_token(n[1]),
                                  TOKEN_SIZE - 1))
        scene.labels.append(Label(mid, cy + cell_h - PAD / 4 - _line_height(NUMBER_SIZE) / 2,
                                  f"{weights[n]:.2f}"))
    rows = math.ceil(len(loose) / LOOSE_COLUMNS)
    columns = min(len(loose), LOOSE_COLUMNS)
    return columns * (cell_w + 3), y0 - y + rows * (cell_h + 3)


def _edges(scene: Scene, drawing: Drawing, box: dict[DrawnNode, tuple[float, float, float, float]]) -> None:
    for src, dst in sorted(drawing.edges):
        sx, sy, sw, sh = box[src]
        dx, dy, _, dh = box[dst]
        start, end = (sx + sw, sy + sh / 2), (dx - 1.5, dy + dh / 2)
        bend = (end[0] - start[0]) / 2
        scene.curves.append(Curve((start, (start[0] + bend, start[1]), (end[0] - bend, end[1]), end)))
        label = skip_label(drawing.skips.get((src, dst), frozenset({0})))
        if label:
            scene.labels.append(Label((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 - 8, label,
                                      colour="#333333"))


def scene_of(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN, output: OutputTokens | None = None,
             measure: Measure = estimate_width) -> Scene:
    """The drawing of a neuron graph, placed: what :func:`store.render.to_dot` says, laid out here.

    Args:
        graph: the neuron's record.
        max_nodes: the most nodes to draw; beyond it the strongest paths that fit are kept.
        output: what the neuron writes, named in the title where given.
        measure: text width in pixels at a font size (the font the picture will use).

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
    """
    drawing = layout(graph, max_nodes)
    loose = loose_nodes(drawing)
    apart = set(loose)
    scene = Scene(title=f"N2G neuron graph {graph.id} of {graph.model}")
    top = _title_and_legend(scene, title_lines(graph, drawing, max_nodes, output), has_repeat(drawing), measure)

    deepest = max((d for d, _ in drawing.nodes), default=0)
    by_depth: list[list[DrawnNode]] = [[] for _ in range(deepest + 1)]
    for node in drawing.nodes:
        if node not in apart:
            by_depth[node[0]].append(node)
    ordered = _order(by_depth, drawing.edges, drawing.nodes)
    sized = [[_node_size(n, drawing.nodes[n], measure) for n in column] for column in ordered]
    tops = _place(sized, drawing.edges)
    shift = top - min(tops.values(), default=0.0)

    # Columns left to right: the deepest context first, the activating tokens last.
    widths = [max((n.w for n in column), default=0.0) for column in sized]
    x, box = PAD, {}
    for depth in range(deepest, -1, -1):
        for n in sized[depth]:
            bx = x + (widths[depth] - n.w) / 2
            box[n.node] = (bx, tops[n.node] + shift, n.w, n.h)
            _node_shapes(scene, n, bx, tops[n.node] + shift, drawing.nodes[n.node], n.node in drawing.ends)
        if depth:
            x += widths[depth] + COLUMN_GAP
    _edges(scene, drawing, box)
    bottom = max((y + h for _, y, _, h in box.values()), default=top)
    right = x + widths[0] if widths and sized[0] else x
    if loose:
        table_y = bottom + 2 * PAD if box else top
        w, h = _table(scene, loose, drawing.nodes, x, table_y, measure)
        bottom, right = table_y + h, max(right, x + w)
    text_right = max((lb.x + measure(lb.text, lb.size) for lb in scene.labels if lb.anchor == "start"),
                     default=0.0)
    scene.width = math.ceil(max(right, text_right) + PAD)
    scene.height = math.ceil(bottom + PAD)
    return scene
