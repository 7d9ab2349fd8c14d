"""Graphviz DOT text for a neuron graph, drawn the way the paper draws it.

In: a :class:`store.graph.NeuronGraph`. Out: DOT source (``to_dot``) that ``dot -Tsvg`` renders,
and node and edge counts (``render_summary``) for a caller that wants to say what it drew.

The paper's drawing (Foote et al. 2023, section 3.2, "Graph Building"):

- IGNORE nodes are removed; a path through an IGNORE node links the real tokens on either side.
- At each depth (distance from the activating token, counted after removing IGNOREs) identical
  tokens are merged, so a drawn node is a ``(depth, token)`` pair.
- Activating tokens (depth 0) are red, by normalised activation; context tokens are blue, by
  importance; stronger is more saturated, from white to the full colour.
- A node where a path ends has a bold outline.

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
import unicodedata
from dataclasses import dataclass
from typing import Any

from store.graph import NeuronGraph, top_f1
from store.tokens import REPEAT_KEY
from store.trie import IGNORE, Node, label

DrawnNode = tuple[int, str]
"""A drawn node: (depth, token), depth 0 for activating tokens; a repeat node's token is
``REPEAT_KEY``."""

NODES_DRAWN = 150
"""Most nodes a drawing shows when not told (render_graph_dot's default); the strongest paths are kept."""
REPEAT_LABEL = "↻ repeat"
"""What a repeat node shows."""

_VISIBLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "␣"}


# --------------------------------------------------------------------- text
def display_token(token: str) -> str:
    """Readable text for a token: whitespace-only tokens and control characters made visible.

    Ordinary tokens keep their leading space (" except" stays " except"); a token made only of
    whitespace shows each space as "␣", and newlines, tabs and other control characters always
    show as escapes, so no label is blank or breaks a line.

    >>> display_token(" except"), display_token("  "), display_token("\\n"), display_token("")
    (' except', '␣␣', '\\\\n', '∅')
    """
    if token == "":
        return "∅"
    blank = token.strip() == ""
    out = []
    for ch in token:
        if ch in _VISIBLE and (ch != " " or blank):
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


@dataclass(frozen=True)
class Drawing:
    """What to draw: the kept nodes with their weights, the edges, the bold nodes, and totals."""

    nodes: dict[DrawnNode, float]
    edges: frozenset[tuple[DrawnNode, DrawnNode]]  # (context side, activating side)
    ends: frozenset[DrawnNode]
    total_nodes: int
    total_edges: int
    total_paths: int
    kept_paths: int


def _paths(graph: NeuronGraph) -> list[_Path]:
    """Every path of the trie with its IGNORE nodes dropped, walked iteratively."""
    paths: list[_Path] = []
    stack: list[tuple[Node, tuple[DrawnNode, ...], tuple[float, ...]]] = [
        (child, (), ()) for child in graph.graph.root.children.values()
    ]
    while stack:
        node, drawn, weights = stack.pop()
        if node.token is not IGNORE:
            drawn = drawn + ((len(drawn), label(node.token)),)
            weights = weights + (node.importance,)
        if node.end is not None:
            # A path ending on IGNORE ends, as drawn, at its last real token.
            paths.append(_Path(node.end, drawn, weights))
        stack.extend((child, drawn, weights) for child in node.children.values())
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
    kept = 0
    for path in paths:
        new = {n for n in path.nodes if n not in nodes}
        if len(nodes) + len(new) > max_nodes:
            continue  # a weaker path that shares more nodes may still fit
        kept += 1
        for n, weight in zip(path.nodes, path.weights, strict=True):
            nodes[n] = max(nodes.get(n, weight), weight)
        edges |= _edges(path)
        ends.add(path.nodes[-1])
    return Drawing(nodes=nodes, edges=frozenset(edges), ends=frozenset(ends),
                   total_nodes=len(all_nodes), total_edges=len(all_edges),
                   total_paths=len(paths), kept_paths=kept)


# --------------------------------------------------------------------- output
def _node_attrs(node: DrawnNode, weight: float, end: bool) -> str:
    depth, token = node
    repeat = token == REPEAT_KEY
    colour = "green" if repeat else "red" if depth == 0 else "blue"
    what = "activation" if depth == 0 else "importance"
    v = 0.0 if math.isnan(weight) else min(max(weight, 0.0), 1.0)
    tip = f"{what} {weight:.3f}"
    if repeat:
        tip = ("any token that continues an earlier copy in the text; " if depth == 0 else
               f"the {depth + 1} tokens ending at the activating one occurred earlier; ") + tip
    attrs = [
        f"label={_quote(REPEAT_LABEL if repeat else token)}",
        f'fillcolor="{_shade(weight, colour)}"',
        # Black reads well on any red or green, but not on deep blue.
        f'fontcolor="{"white" if depth > 0 and v >= 0.6 and not repeat else "black"}"',
        f"tooltip={_quote(tip)}",
    ]
    style = "dashed,filled" + (",bold" if end else "")
    if repeat:
        attrs += ["shape=ellipse", f'style="{style}"']
    elif end:
        attrs.append('style="rounded,filled,bold"')
    if end:
        attrs.append("penwidth=3")
    return ", ".join(attrs)


def to_dot(graph: NeuronGraph, *, max_nodes: int = NODES_DRAWN) -> str:
    """Graphviz DOT source for a neuron graph, drawn as in the paper.

    Args:
        graph: the neuron's record.
        max_nodes: the most nodes to draw; beyond it the strongest paths that fit are kept.

    Returns:
        A ``digraph`` whose title names the neuron and model (and its F1, where scored), with
        edges from context towards the activating token.

    Raises:
        ValueError: if ``max_nodes`` is less than 1.
    """
    drawing = layout(graph, max_nodes)
    order = sorted(drawing.nodes)  # by depth, then token
    ids = {node: f"n{i}" for i, node in enumerate(order)}

    title = [f"{graph.id} · {graph.model}"]
    f1 = top_f1(graph)
    if f1 is not None:
        title.append(f"F1 {f1:.2f}")
    left_out = drawing.total_nodes - len(drawing.nodes)
    note = ""
    if left_out:
        note = (f"{left_out} of {drawing.total_nodes} nodes and "
                f"{drawing.total_paths - drawing.kept_paths} of {drawing.total_paths} paths "
                f"left out (max_nodes={max_nodes})")
        title.append(note)

    lines = [
        f"// N2G neuron graph {_escape(graph.id)} of {_escape(display_token(graph.model))}; "
        "edges run from context to the activating token",
    ]
    if note:
        lines.append(f"// {note}")
    lines += [
        f"digraph {_quote(graph.id)} {{",
        f"  label={_quote(*title)};",
        "  labelloc=t; rankdir=LR; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, penwidth=1];',
        "  edge [color=gray40, arrowsize=0.7];",
    ]
    for node in order:
        lines.append(f"  {ids[node]} [{_node_attrs(node, drawing.nodes[node], node in drawing.ends)}];")
    depths = sorted({depth for depth, _ in order})
    for depth in depths:
        column = " ".join(f"{ids[n]};" for n in order if n[0] == depth)
        lines.append(f"  {{ rank=same; {column} }}")
    for src, dst in sorted(drawing.edges, key=lambda e: (ids[e[0]], ids[e[1]])):
        lines.append(f"  {ids[src]} -> {ids[dst]};")
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


# --------------------------------------------------------------------- pictures
class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is not installed here."""


def draw(dot: str, fmt: str = "svg", *, timeout: float = 20.0) -> bytes:
    """The drawing of DOT source as ``png`` or ``svg`` bytes, made by Graphviz's ``dot`` program.

    Raises:
        GraphvizMissing: where ``dot`` is not on the PATH.
        RuntimeError: where ``dot`` fails or takes longer than ``timeout`` seconds.
    """
    import shutil
    import subprocess

    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing("Graphviz `dot` is not installed")
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"dot took longer than {timeout:g} s") from exc
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise RuntimeError(f"dot exited with status {done.returncode}: {reason[0] if reason else 'no output'}")
    return done.stdout
