"""Graphviz DOT text for a neuron graph, drawn the way the paper draws it.

In: a :class:`store.graph.NeuronGraph`. Out: DOT source (``to_dot``) that ``dot -Tsvg`` renders,
and node and edge counts (``render_summary``) for a caller that wants to say what it drew. The
choice of what to draw (``layout``), the colours, title and legend are shared with the pictures
drawn without Graphviz (``store.layout``, ``store.svg``, ``store.png``).

The paper's drawing (Foote et al. 2023, section 3.2, "Graph Building"):

- IGNORE nodes are removed; a path through an IGNORE node links the real tokens on either side.
- At each depth (distance from the activating token, counted after removing IGNOREs) identical
  tokens are merged, so a drawn node is a ``(depth, token)`` pair.
- Activating tokens (depth 0) are red, by normalised activation; context tokens are blue, by
  importance; stronger is more saturated, from white to the full colour.
- A node where a path ends has a bold outline.

Not in the paper, so that a person can read the picture without the paper beside it:

- every node shows its number under its token: an activating token its normalised activation
  (0-1), a context token its importance, the paper's saliency ``1 - a(token masked) / a``; an
  importance is not capped at 1 (above 1, masking the token drives the activation below zero), so
  context blues deepen as ``1 - exp(-1.5 x importance)`` (:func:`importance_shade`), which
  separates 1 from 2 instead of saturating at 1;
- a token's leading and trailing spaces show as ``␣`` (``' from'`` reads ``␣from``, ``'from'``
  reads ``from``);
- an edge that stands for positions whose token does not matter (IGNOREs removed) is labelled
  ``… n`` (``… 0-2`` where paths differ);
- activating tokens that fire with no context (no edge) are laid out together in one table,
  :data:`LOOSE_COLUMNS` a row, strongest first, instead of a tall column of boxes, where there are
  at least :data:`LOOSE_MIN` of them;
- the title carries a legend that says all of this.

Not in the paper: a repeat node ("continues an earlier copy in the same text", ``store.trie.REPEAT``)
is drawn as a dashed green ellipse labelled ``↻ repeat``, merged per depth like a token, so a
graph of induction-like neurons shows that it matches any token that repeats, not a token list.

Edges run from context towards the activating token (context -> activating), as in the paper's
figures, and the graph is laid out left to right so that it reads in text order: the earliest
context on the left, the activating token on the right. Nodes of one depth share a column.

Graphs with more than ``max_nodes`` drawn nodes keep their strongest paths (by end activation)
while they fit; the title and a comment say how much was left out. Output is deterministic.
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
from dataclasses import dataclass
from typing import Any

from store.graph import NeuronGraph, top_f1
from store.logitfile import OutputTokens
from store.tokens import REPEAT_KEY
from store.trie import IGNORE, Node, label

DrawnNode = tuple[int, str]
"""A drawn node: (depth, token), depth 0 for activating tokens; a repeat node's token is
``REPEAT_KEY``."""

NODES_DRAWN = 150
"""Most nodes a drawing shows when not told (render_graph_dot's default); the strongest paths are kept."""
REPEAT_LABEL = "↻ repeat"
"""What a repeat node shows."""
LOOSE_MIN = 4
"""Activating tokens with no context drawn as one table (fewer are drawn as boxes)."""
LOOSE_COLUMNS = 5
"""Tokens a row of that table."""
LEGEND_WIDTH = 64
"""Characters a line of the legend's text."""
IMPORTANCE_RATE = 1.5
"""How fast a context token's blue deepens with importance (see :func:`importance_shade`)."""

_VISIBLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣"}


# --------------------------------------------------------------------- text
def display_token(token: str) -> str:
    """Readable text for a token: edge spaces, whitespace-only tokens and control characters made
    visible.

    Leading and trailing spaces show as "␣" (" except" reads "␣except", so it does not look like
    "except"); spaces inside a token stay; newlines, tabs and other control characters always show
    as escapes, so no label is blank or breaks a line.

    >>> display_token(" except"), display_token("  "), display_token("\\n"), display_token("")
    ('␣except', '␣␣', '\\\\n', '∅')
    >>> display_token("a b ")
    'a b␣'
    """
    if token == "":
        return "∅"
    core = token.strip(" ")
    lead = len(token) - len(token.lstrip(" "))
    trail = len(token) - len(token.rstrip(" ")) if core else 0
    out = []
    for i, ch in enumerate(token):
        if ch in _VISIBLE and (ch != " " or i < lead or i >= len(token) - trail):
            out.append(_VISIBLE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _escape(text: str) -> str:
    """Text for inside a DOT double-quoted string, shown literally by Graphviz.

    Graphviz reads backslash escapes in labels (``\\n``, ``\\l``, ``\\N``...), so every backslash
    is doubled; quotes are escaped; line breaks never reach the output (see display_token).
    """
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _quote(*lines: str) -> str:
    """A DOT string showing the given lines (each made visible by display_token) one under another."""
    return '"' + "\\n".join(_escape(display_token(line)) for line in lines) + '"'


def _html(text: str) -> str:
    """Text for inside a Graphviz HTML-like label, shown literally."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def importance_shade(importance: float) -> float:
    """How deep a context token's blue is, 0 to 1: ``1 - exp(-1.5 x importance)``.

    Importances run past 1 (masking a token can drive the activation below zero), so a shade
    clamped at 1 would draw 1 and 5 alike; this one keeps deepening.

    >>> [round(importance_shade(v), 2) for v in (0.0, 0.5, 1.0, 2.0)]
    [0.0, 0.53, 0.78, 0.95]
    """
    if math.isnan(importance) or importance <= 0:
        return 0.0
    return 1.0 - math.exp(-IMPORTANCE_RATE * importance)


def _shade(value: float, colour: str) -> str:
    """RGB hex from white (0) to the full colour (1): "red", "blue" or "green"."""
    v = 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)
    pale = round(255 * (1.0 - v))
    if colour == "green":  # a mid green at full strength, so black text stays readable
        return f"#{pale:02x}{255 - round(55 * v):02x}{pale:02x}"
    return f"#ff{pale:02x}{pale:02x}" if colour == "red" else f"#{pale:02x}{pale:02x}ff"


# --------------------------------------------------------------------- layout
@dataclass(frozen=True)
class _Path:
    end: float
    nodes: tuple[DrawnNode, ...]  # activating token first
    weights: tuple[float, ...]  # activation of the activating node, importance of context nodes
    gaps: tuple[int, ...] = ()  # IGNOREs between nodes[k] and nodes[k + 1]


@dataclass(frozen=True)
class Drawing:
    """What to draw: the kept nodes with their weights, the edges, the bold nodes, and totals."""

    nodes: dict[DrawnNode, float]
    edges: frozenset[tuple[DrawnNode, DrawnNode]]  # (context side, activating side)
    ends: frozenset[DrawnNode]
    skips: dict[tuple[DrawnNode, DrawnNode], frozenset[int]]
    """For each drawn edge, how many positions whose token does not matter its paths skip."""
    total_nodes: int
    total_edges: int
    total_paths: int
    kept_paths: int


def _paths(graph: NeuronGraph) -> list[_Path]:
    """Every path of the trie with its IGNORE nodes dropped, walked iteratively."""
    paths: list[_Path] = []
    # (node, drawn nodes, weights, gaps between drawn nodes, IGNOREs since the last drawn node)
    stack: list[tuple[Node, tuple[DrawnNode, ...], tuple[float, ...], tuple[int, ...], int]] = [
        (child, (), (), (), 0) for child in graph.graph.root.children.values()
    ]
    while stack:
        node, drawn, weights, gaps, skipped = stack.pop()
        if node.token is not IGNORE:
            if drawn:
                gaps = gaps + (skipped,)
            drawn = drawn + ((len(drawn), label(node.token)),)
            weights = weights + (node.importance,)
            skipped = 0
        else:
            skipped += 1
        if node.end is not None:
            # A path ending on IGNORE ends, as drawn, at its last real token.
            paths.append(_Path(node.end, drawn, weights, gaps))
        stack.extend((child, drawn, weights, gaps, skipped) for child in node.children.values())
    return paths


def _edges(path: _Path) -> set[tuple[DrawnNode, DrawnNode]]:
    return {(path.nodes[k + 1], path.nodes[k]) for k in range(len(path.nodes) - 1)}


def layout(graph: NeuronGraph, max_nodes: int = NODES_DRAWN) -> Drawing:
    """The nodes, edges and end nodes to draw, the strongest paths first up to ``max_nodes``.

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, got {max_nodes}")
    paths = sorted(_paths(graph), key=lambda p: (-p.end, p.nodes))
    all_nodes = {n for p in paths for n in p.nodes}
    all_edges = {e for p in paths for e in _edges(p)}

    nodes: dict[DrawnNode, float] = {}
    edges: set[tuple[DrawnNode, DrawnNode]] = set()
    ends: set[DrawnNode] = set()
    skips: dict[tuple[DrawnNode, DrawnNode], set[int]] = {}
    kept = 0
    for path in paths:
        new = {n for n in path.nodes if n not in nodes}
        if len(nodes) + len(new) > max_nodes:
            continue  # a weaker path that shares more nodes may still fit
        kept += 1
        for n, weight in zip(path.nodes, path.weights, strict=True):
            nodes[n] = max(nodes.get(n, weight), weight)
        edges |= _edges(path)
        for k, gap in enumerate(path.gaps):
            skips.setdefault((path.nodes[k + 1], path.nodes[k]), set()).add(gap)
        ends.add(path.nodes[-1])
    return Drawing(nodes=nodes, edges=frozenset(edges), ends=frozenset(ends),
                   skips={e: frozenset(g) for e, g in skips.items()},
                   total_nodes=len(all_nodes), total_edges=len(all_edges),
                   total_paths=len(paths), kept_paths=kept)


# --------------------------------------------------------------------- output
def _strength(node: DrawnNode, weight: float) -> float:
    """How deep a node's colour is, 0 to 1: activation as it is, importance by :func:`importance_shade`."""
    if node[0] == 0:
        return 0.0 if math.isnan(weight) else min(max(weight, 0.0), 1.0)
    return importance_shade(weight)


def fill(node: DrawnNode, weight: float) -> str:
    """A node's fill colour: red (activating), blue (context) or green (repeat), by strength."""
    depth, token = node
    colour = "green" if token == REPEAT_KEY else "red" if depth == 0 else "blue"
    return _shade(_strength(node, weight), colour)


def text_colour(node: DrawnNode, weight: float) -> str:
    """Black reads well on any red or green, but not on deep blue: white there."""
    deep = node[0] > 0 and _strength(node, weight) >= 0.6 and node[1] != REPEAT_KEY
    return "white" if deep else "black"


def node_tip(node: DrawnNode, weight: float) -> str:
    """A node's tooltip: what its number is, and for a repeat node what it matches."""
    depth, token = node
    tip = f"{'activation' if depth == 0 else 'importance'} {weight:.3f}"
    if token == REPEAT_KEY:
        tip = ("any token that continues an earlier copy in the text; " if depth == 0 else
               f"the {depth + 1} tokens ending at the activating one occurred earlier; ") + tip
    return tip


def _node_attrs(node: DrawnNode, weight: float, end: bool) -> str:
    repeat = node[1] == REPEAT_KEY
    attrs = [
        f"label={_quote(REPEAT_LABEL if repeat else node[1], f'{weight:.2f}')}",
        f'fillcolor="{fill(node, weight)}"',
        f'fontcolor="{text_colour(node, weight)}"',
        f"tooltip={_quote(node_tip(node, weight))}",
    ]
    style = "dashed,filled" + (",bold" if end else "")
    if repeat:
        attrs += ["shape=ellipse", f'style="{style}"']
    elif end:
        attrs.append('style="rounded,filled,bold"')
    if end:
        attrs.append("penwidth=3")
    return ", ".join(attrs)


def loose_nodes(drawing: Drawing) -> list[DrawnNode]:
    """Activating tokens drawn with no context (no edge reaches them), strongest first, where there
    are enough of them to lay out as a table (:data:`LOOSE_MIN`); else none."""
    reached = {dst for _, dst in drawing.edges}
    loose = [n for n in drawing.nodes if n[0] == 0 and n not in reached and n[1] != REPEAT_KEY]
    loose.sort(key=lambda n: (-drawing.nodes[n], n))
    return loose if len(loose) >= LOOSE_MIN else []


def _table(nodes: list[DrawnNode], weights: dict[DrawnNode, float]) -> str:
    """The loose activating tokens as one HTML-like table, :data:`LOOSE_COLUMNS` a row."""
    rows = [f'<TR><TD COLSPAN="{LOOSE_COLUMNS}" BORDER="0"><I>fire in any context ({len(nodes)}; each '
            "ends a path)</I></TD></TR>"]
    for start in range(0, len(nodes), LOOSE_COLUMNS):
        cells = "".join(f'<TD BGCOLOR="{fill(n, weights[n])}">{_html(display_token(n[1]))}<BR/>'
                        f"{weights[n]:.2f}</TD>" for n in nodes[start:start + LOOSE_COLUMNS])
        rows.append(f"<TR>{cells}</TR>")
    return ('<<TABLE BORDER="0" CELLBORDER="2" CELLSPACING="3" CELLPADDING="4">' + "".join(rows)
            + "</TABLE>>")


def skip_label(gaps: frozenset[int]) -> str:
    """An edge's label: how many positions that do not matter its paths skip (none: no label)."""
    low, high = min(gaps), max(gaps)
    if high == 0:
        return ""
    return f"… {high}" if low == high else f"… {low}-{high}"


LEGEND = (
    ("#ff6666", "activating token: the neuron fires on it; its number is the activation, as a share "
                "of the neuron's largest (0-1)"),
    ("#8080ff", "context token: earlier text that makes it fire; its number is the importance, 1 - "
                "activation with the token masked / activation (1: all of it; above 1: masking drives "
                "it below zero; the blue keeps deepening past 1)"),
    ("bold", "bold outline: a path ends here, and the graph predicts that number there"),
    ("→", "from context to the token it makes fire, in text order; '… n': n tokens that do not matter "
          "stand between"),
    ("␣", "a space: '␣from' is ' from', 'from' has none"),
)
"""The legend's rows: a sample (a colour, or a word) and what it means."""


def legend_rows(repeat: bool) -> list[tuple[str, str]]:
    """The legend's rows for a drawing, with the repeat row where it holds a repeat node."""
    rows = list(LEGEND)
    if repeat:
        rows.append(("↻", f"{REPEAT_LABEL}: any tokens that continue an earlier copy in the same text"))
    return rows


def _legend(title: list[str], repeat: bool) -> str:
    """The graph's label: its title, then the legend, as an HTML-like table."""
    rows = [f'<TR><TD COLSPAN="2"><B>{_html(line)}</B></TD></TR>' if i == 0 else
            f'<TR><TD COLSPAN="2">{_html(line)}</TD></TR>' for i, line in enumerate(title)]
    for sample, meaning in legend_rows(repeat):
        if sample.startswith("#"):
            cell = f'<TD BGCOLOR="{sample}" BORDER="1">token<BR/>0.90</TD>'
        elif sample == "bold":
            cell = '<TD BORDER="3">token</TD>'
        else:
            cell = f"<TD>{_html(sample)}</TD>"
        text = '<BR ALIGN="LEFT"/>'.join(_html(line) for line in textwrap.wrap(meaning, LEGEND_WIDTH))
        rows.append(f'<TR>{cell}<TD ALIGN="LEFT" BALIGN="LEFT">{text}</TD></TR>')
    return '<<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="2">' + "".join(rows) + "</TABLE>>"


WRITES_SHOWN = 3
"""Promoted and suppressed tokens a drawing's title names (``store.logitfile``: what it writes)."""


def writes_line(output: OutputTokens) -> str:
    """The title line that says what a neuron writes, from the weights: its top promoted and
    suppressed tokens, leading spaces visible.

    >>> from store.logitfile import TokenValue
    >>> writes_line(OutputTokens(promoted=[TokenValue(token=" eye", value=0.9)],
    ...                          suppressed=[TokenValue(token="ear", value=-0.4)], path="direct"))
    'writes (direct path): promotes ␣eye; suppresses ear'
    """
    def named(values: list) -> str:
        return ", ".join(display_token(v.token) for v in values[:WRITES_SHOWN]) or "nothing"
    return f"writes (direct path): promotes {named(output.promoted)}; suppresses {named(output.suppressed)}"


def left_out_note(drawing: Drawing, max_nodes: int) -> str:
    """What a capped drawing leaves out ("" where it shows everything)."""
    left_out = drawing.total_nodes - len(drawing.nodes)
    if not left_out:
        return ""
    return (f"{left_out} of {drawing.total_nodes} nodes and {drawing.total_paths - drawing.kept_paths} of "
            f"{drawing.total_paths} paths left out (max_nodes={max_nodes})")


def title_lines(graph: NeuronGraph, drawing: Drawing, max_nodes: int, output: OutputTokens | None) -> list[str]:
    """A drawing's title, one line each: the neuron and model, its F1 where scored, what it writes
    where known, and what the drawing leaves out."""
    title = [f"{graph.id} · {graph.model}"]
    f1 = top_f1(graph)
    if f1 is not None:
        title.append(f"F1 {f1:.2f}")
    if output is not None:
        title.append(writes_line(output))
    note = left_out_note(drawing, max_nodes)
    return title + ([note] if note else [])


def has_repeat(drawing: Drawing) -> bool:
    """Whether the drawing holds a repeat node (the legend then explains it)."""
    return any(token == REPEAT_KEY for _, token in drawing.nodes)


def to_dot(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN, output: OutputTokens | None = None) -> str:
    """Graphviz DOT source for a neuron graph, drawn as in the paper with a legend.

    Args:
        graph: the neuron's record.
        max_nodes: the most nodes to draw; beyond it the strongest paths that fit are kept.
        output: what the neuron writes (``store.logitfile``), named in the title where given.

    Returns:
        A ``digraph`` whose title names the neuron and model (and its F1, where scored), with a
        legend, nodes labelled with their token and number, and edges from context towards the
        activating token.

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
    """
    drawing = layout(graph, max_nodes)
    loose = loose_nodes(drawing)
    apart = set(loose)
    order = sorted(n for n in drawing.nodes if n not in apart)  # by depth, then token
    ids = {node: f"n{i}" for i, node in enumerate(order)}
    title = title_lines(graph, drawing, max_nodes, output)
    note = left_out_note(drawing, max_nodes)

    lines = [
        f"// N2G neuron graph {_escape(graph.id)} of {_escape(display_token(graph.model))}; "
        "edges run from context to the activating token",
    ]
    if note:
        lines.append(f"// {note}")
    lines += [
        f"digraph {_quote(graph.id)} {{",
        f"  label={_legend(title, has_repeat(drawing))};",
        "  labelloc=t; labeljust=l; rankdir=LR; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, penwidth=1];',
        "  edge [color=gray40, arrowsize=0.7, fontname=Helvetica, fontsize=10];",
    ]
    for node in order:
        lines.append(f"  {ids[node]} [{_node_attrs(node, drawing.nodes[node], node in drawing.ends)}];")
    if loose:
        lines.append(f"  loose [shape=plaintext, style=solid, label={_table(loose, drawing.nodes)}];")
    depths = sorted({depth for depth, _ in order})
    for depth in depths:
        column = " ".join(f"{ids[n]};" for n in order if n[0] == depth)
        extra = " loose;" if loose and depth == 0 else ""
        lines.append(f"  {{ rank=same; {column}{extra} }}")
    if loose and not depths:
        lines.append("  { rank=same; loose; }")
    for src, dst in sorted(drawing.edges, key=lambda e: (ids[e[0]], ids[e[1]])):
        skip = skip_label(drawing.skips.get((src, dst), frozenset({0})))
        lines.append(f"  {ids[src]} -> {ids[dst]}" + (f" [label={_quote(skip)}]" if skip else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_summary(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN) -> dict[str, Any]:
    """Counts of what :func:`to_dot` draws for a graph, and of what it leaves out.

    Returns:
        ``id``, ``model``, ``nodes``/``edges``/``paths`` (the whole graph as drawn without a cap),
        ``shown_nodes``/``shown_edges``/``shown_paths``, ``activating_nodes``, ``context_nodes``
        (shown) and ``depth`` (the deepest shown context, 0 for activating tokens only).
    """
    drawing = layout(graph, max_nodes)
    return {
        "id": graph.id,
        "model": graph.model,
        "nodes": drawing.total_nodes,
        "edges": drawing.total_edges,
        "paths": drawing.total_paths,
        "shown_nodes": len(drawing.nodes),
        "shown_edges": len(drawing.edges),
        "shown_paths": drawing.kept_paths,
        "activating_nodes": sum(1 for depth, _ in drawing.nodes if depth == 0),
        "context_nodes": sum(1 for depth, _ in drawing.nodes if depth > 0),
        "depth": max((depth for depth, _ in drawing.nodes), default=0),
    }
