"""DOT rendering: the paper's drawing rules, escaping, and the node cap."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from xml.etree import ElementTree

import pydot
import pytest
from PIL import Image

from store.graph import NeuronGraph
from store import png
from store.layout import scene_of
from store.render import REPEAT_LABEL, display_token, layout, render_summary, to_dot
from store.svg import to_svg
from store.tokens import REPEAT_KEY
from store.trie import IGNORE, REPEAT
from tests.graphs import make_graph

FIGURE_1 = make_graph(
    [
        ((" everyone", IGNORE, " except"), 0.9, [0.0, 0.8]),
        ((" everyone", " but"), 0.5, [0.4]),
        ((" all", IGNORE, " except"), 0.6, [0.0, 1.0]),
        ((" everyone",), 0.3),
    ],
    layer=1, neuron=404, model="solu-6l", f1=0.75,
)


def parse(dot: str) -> pydot.Dot:
    graphs = pydot.graph_from_dot_data(dot)
    assert graphs is not None and len(graphs) == 1, dot
    return graphs[0]


def unquote(value: str | None) -> str:
    assert value is not None
    return value[1:-1] if value.startswith('"') and value.endswith('"') else value


def token_of(label: str) -> str:
    """A node's token as written in the DOT source: its label's first line (the number is the last)."""
    return unquote(label).rsplit("\\n", 1)[0]


def number_of(label: str) -> str:
    return unquote(label).rsplit("\\n", 1)[1]


def nodes(graph: pydot.Dot) -> dict[str, pydot.Node]:
    """Drawn token nodes by token as written in the DOT source (defaults, rank groups and the
    table of tokens without context left out)."""
    found = {}
    for node in graph.get_nodes() + [n for s in graph.get_subgraphs() for n in s.get_nodes()]:
        label = node.get("label")
        if label is not None and not label.startswith("<"):
            found[token_of(label)] = node
    return found


def edges(graph: pydot.Dot) -> set[tuple[str, str]]:
    labels = {n.get_name(): token_of(n.get("label")) for n in graph.get_nodes() if n.get("label")}
    return {(labels[e.get_source()], labels[e.get_destination()]) for e in graph.get_edges()}


def test_dot_parses_and_is_a_digraph() -> None:
    assert parse(to_dot(FIGURE_1)).get_type() == "digraph"


def test_title_names_the_neuron_and_model() -> None:
    title = unquote(parse(to_dot(FIGURE_1)).get("label"))
    assert "L1/N404" in title and "solu-6l" in title


def test_ignore_nodes_are_removed_and_bridge_their_neighbours() -> None:
    graph = parse(to_dot(FIGURE_1))
    assert set(nodes(graph)) == {"␣everyone", "␣all", "␣except", "␣but"}
    assert ("␣except", "␣everyone") in edges(graph)


def test_identical_tokens_at_the_same_depth_are_merged() -> None:
    # "␣except" stands at depth 1 (after ignores are removed) under both activating tokens.
    labels = [token_of(n.get("label")) for n in parse(to_dot(FIGURE_1)).get_nodes() if n.get("label")]
    assert labels.count("␣except") == 1
    assert ("␣except", "␣all") in edges(parse(to_dot(FIGURE_1)))


def test_identical_tokens_at_different_depths_stay_apart() -> None:
    graph = make_graph([((" a", " b", " a"), 1.0)])
    labels = [token_of(n.get("label")) for n in parse(to_dot(graph)).get_nodes() if n.get("label")]
    assert labels.count("␣a") == 2


def test_edges_run_from_context_to_the_activating_token() -> None:
    assert edges(parse(to_dot(FIGURE_1))) == {
        ("␣except", "␣everyone"), ("␣but", "␣everyone"), ("␣except", "␣all")}


def test_nodes_where_a_path_ends_are_bold() -> None:
    drawn = nodes(parse(to_dot(FIGURE_1)))
    for label in ("␣except", "␣but", "␣everyone"):  # "␣everyone" alone is a path too
        assert "bold" in unquote(drawn[label].get("style")), label
    assert "bold" not in unquote(drawn["␣all"].get("style") or "")


def test_activating_nodes_are_red_and_context_nodes_blue_by_strength() -> None:
    drawn = nodes(parse(to_dot(FIGURE_1)))
    assert unquote(drawn["␣everyone"].get("fillcolor")) == "#ff1919"  # activation 0.9
    assert unquote(drawn["␣except"].get("fillcolor")) == "#3939ff"  # importance 1.0: 1 - e^-1.5
    assert unquote(drawn["␣but"].get("fillcolor")) == "#8c8cff"  # importance 0.4


def test_context_blues_keep_deepening_past_an_importance_of_one() -> None:
    graph = make_graph([((" a", " one"), 1.0, [1.0]), ((" b", " two"), 1.0, [2.0]), ((" c", " five"), 1.0, [5.0])])
    drawn = nodes(parse(to_dot(graph)))
    blues = [int(unquote(drawn[t].get("fillcolor"))[1:3], 16) for t in ("␣one", "␣two", "␣five")]
    assert blues[0] > blues[1] > blues[2], blues  # less red and green: a deeper blue each time


def test_every_node_shows_its_number_and_leading_spaces_show() -> None:
    graph = make_graph([((" from", "from"), 0.9, [1.3])])
    drawn = parse(to_dot(graph))
    numbers = {token_of(n.get("label")): number_of(n.get("label")) for n in drawn.get_nodes() if n.get("label")}
    assert numbers == {"␣from": "0.90", "from": "1.30"}  # ' from' and 'from' no longer look alike


def test_the_title_carries_a_legend_of_colours_numbers_and_edges() -> None:
    title = unquote(parse(to_dot(FIGURE_1)).get("label"))
    for words in ("activating token", "share of the neuron's largest", "importance", "masking drives",
                  "a path ends here", "tokens that do not matter", "␣from"):
        assert words in title, words
    assert "repeat" not in title  # the repeat row only where the graph has repeat nodes


def test_an_edge_over_tokens_that_do_not_matter_says_how_many() -> None:
    labels = {e.get_destination(): e.get("label") for e in parse(to_dot(FIGURE_1)).get_edges()}
    assert sorted(unquote(v) for v in labels.values() if v) == ["… 1", "… 1"]  # ' except' … ' all'/' everyone'
    mixed = make_graph([((" a", " b"), 1.0), ((" a", IGNORE, IGNORE, " b"), 0.9)])
    assert [unquote(e.get("label")) for e in parse(to_dot(mixed)).get_edges()] == ["… 0-2"]


def test_tokens_without_context_are_laid_out_as_one_table_in_rows() -> None:
    graph = make_graph([((f" w{i}",), 1.0 - i / 20) for i in range(12)] + [((" x", " ctx"), 0.5)])
    dot = to_dot(graph)
    drawn = parse(dot)
    assert set(nodes(drawn)) == {"␣x", "␣ctx"}  # the twelve are not boxes of their own
    table = next(n for n in drawn.get_nodes() if n.get_name() == "loose").get("label")
    assert table.count("<TR>") == 1 + 3 and "␣w0<BR/>1.00" in table  # a caption, then rows of five
    few = make_graph([((f" w{i}",), 1.0) for i in range(3)])
    assert len(nodes(parse(to_dot(few)))) == 3  # too few for a table


def test_repeat_nodes_are_drawn_as_dashed_green_ellipses_merged_per_depth() -> None:
    graph = make_graph([((REPEAT, REPEAT), 1.0), ((" b", REPEAT), 0.6), ((" c",), 0.5)])
    drawn = parse(to_dot(graph))
    repeats = [n for n in drawn.get_nodes() if token_of(n.get("label") or '""') == REPEAT_LABEL]
    assert len(repeats) == 2  # one at depth 0 (the wildcard), one at depth 1 (shared)
    for node in repeats:
        assert node.get("shape") == "ellipse" and "dashed" in unquote(node.get("style"))
        fill = unquote(node.get("fillcolor"))
        assert int(fill[3:5], 16) > int(fill[1:3], 16) + 100  # green (full at depth 0, by importance below)
    assert nodes(drawn)["␣c"].get("shape") is None  # literal tokens keep the default box
    assert (REPEAT_LABEL, "␣b") in edges(drawn) and (REPEAT_LABEL, REPEAT_LABEL) in edges(drawn)


def test_strengths_outside_zero_to_one_are_clamped() -> None:
    graph = make_graph([((" a", " b"), 1.7, [-0.5])])
    drawn = nodes(parse(to_dot(graph)))
    assert unquote(drawn["␣a"].get("fillcolor")) == "#ff0000"
    assert unquote(drawn["␣b"].get("fillcolor")) == "#ffffff"


@pytest.mark.parametrize("token", ['say "hi"', "back\\slash", "line\nbreak", "tab\there", "\\n", '\\"', "\\"])
def test_tokens_with_quotes_backslashes_and_newlines_still_parse(token: str) -> None:
    dot = to_dot(make_graph([((token, " ctx"), 1.0)]))
    assert len(nodes(parse(dot))) == 2
    assert "\nbreak" not in dot  # a newline in a token never breaks a line of DOT


def test_newlines_and_blank_tokens_are_shown_visibly() -> None:
    dot = to_dot(make_graph([(("\n", "  ", ""), 1.0)]))
    labels = set(nodes(parse(dot)))
    assert labels == {"\\\\n", "␣␣", "∅"}  # DOT source text; Graphviz shows \n, ␣␣, ∅


def test_max_nodes_caps_the_drawing_and_keeps_the_strongest_paths() -> None:
    graph = make_graph([((f" a{i}", f" c{i}"), i / 10) for i in range(1, 10)])
    dot = to_dot(graph, max_nodes=4)
    assert set(nodes(parse(dot))) == {"␣a9", "␣c9", "␣a8", "␣c8"}
    assert "14 of 18 nodes" in dot


def test_uncapped_drawing_has_no_left_out_note() -> None:
    assert "left out" not in to_dot(FIGURE_1)


def test_a_graph_with_no_paths_renders_its_title_only() -> None:
    dead = parse(to_dot(make_graph([], layer=2, neuron=9)))
    assert nodes(dead) == {} and "L2/N9" in unquote(dead.get("label"))


def test_output_is_deterministic() -> None:
    rebuilt = NeuronGraph.model_validate(FIGURE_1.model_dump())
    assert to_dot(FIGURE_1) == to_dot(rebuilt)


def test_deep_graphs_render_without_recursion() -> None:
    path = tuple(f" t{i}" for i in range(3000))
    dot = to_dot(make_graph([(path, 1.0)]), max_nodes=5000)
    assert dot.count("->") == 2999


def test_summary_counts_nodes_and_edges() -> None:
    summary = render_summary(FIGURE_1)
    assert (summary["nodes"], summary["edges"], summary["activating_nodes"],
            summary["context_nodes"], summary["paths"]) == (4, 3, 2, 2, 4)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
@pytest.mark.parametrize("graph", [
    FIGURE_1, make_graph([(('q"\\\n', "\t", " "), 1.0)]),
    make_graph([((f" <w{i}&>",), 0.9) for i in range(6)] + [((" &", '"q" <b>'), 1.0)]),  # a table, HTML escapes
    make_graph([((REPEAT, REPEAT), 1.0)])])
def test_graphviz_renders_the_dot_as_svg(graph: NeuronGraph) -> None:
    result = subprocess.run(["dot", "-Tsvg"], input=to_dot(graph), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout


# --------------------------------------------------------------------- SVG and PNG without Graphviz
TRICKY = [
    FIGURE_1, make_graph([(('q"\\\n', "\t", " "), 1.0)]),
    make_graph([((f" <w{i}&>",), 0.9) for i in range(6)] + [((" &", '"q" <b>'), 1.0)]),  # a table, escapes
    make_graph([((REPEAT, REPEAT), 1.0)]),
]


def svg_texts(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.mark.parametrize("graph", TRICKY)
def test_svg_is_well_formed_and_shows_every_drawn_token(graph: NeuronGraph) -> None:
    svg = to_svg(graph)
    texts = svg_texts(svg)
    drawing = layout(graph)
    for depth, token in drawing.nodes:
        assert (REPEAT_LABEL if token == REPEAT_KEY else display_token(token)) in texts
    assert any(t.startswith("activating token:") for t in texts)  # the legend


def test_svg_marks_path_ends_bold_and_repeats_as_dashed_ellipses() -> None:
    svg = to_svg(make_graph([((REPEAT, " the"), 1.0), ((" a",), 0.4)]))
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    ellipses = list(root.iter(f"{ns}ellipse"))
    assert ellipses and all(e.get("stroke-dasharray") for e in ellipses)
    bold = [r for r in root.iter(f"{ns}rect") if r.get("stroke-width") == "3"]
    assert bold  # the end of ' a', and the legend's sample


@pytest.mark.parametrize("graph", [FIGURE_1, TRICKY[2], make_graph(
    [((f" c{i}", f" m{i % 3}", f" a{i % 2}"), 0.5 + i / 40) for i in range(12)])])
def test_nodes_do_not_overlap_and_edges_join_neighbouring_columns(graph: NeuronGraph) -> None:
    scene = scene_of(graph)
    nodes = [b for b in scene.boxes if b.tip]
    for i, a in enumerate(nodes):
        assert 0 <= a.x and a.x + a.w <= scene.width and 0 <= a.y and a.y + a.h <= scene.height
        for b in nodes[i + 1:]:
            apart = a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
            assert apart, (a, b)
    for curve in scene.curves:
        (x0, y0), *_, (x1, y1) = curve.points
        assert x0 < x1  # context on the left, the token it leads to on the right
        assert any(abs(b.x + b.w - x0) < 0.01 and b.y <= y0 <= b.y + b.h for b in nodes)
        assert any(abs(b.x - x1) < 2 and b.y <= y1 <= b.y + b.h for b in nodes)


def test_svg_is_the_same_every_time() -> None:
    assert to_svg(TRICKY[2]) == to_svg(TRICKY[2])


@pytest.mark.parametrize("system_font", [True, False], ids=["system-font", "pillow-font"])
def test_png_is_a_picture_of_the_scene_with_or_without_a_system_font(system_font: bool, monkeypatch,
                                                                      tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz
    if not system_font:
        monkeypatch.setattr(png, "_font_file", lambda: None)
        png._font.cache_clear()
    try:
        data = png.to_png(FIGURE_1)
    finally:
        png._font.cache_clear()
    image = Image.open(io.BytesIO(data))
    scene = scene_of(FIGURE_1, measure=png._measure)
    assert image.format == "PNG"
    assert image.size == (math.ceil(scene.width * png.SCALE), math.ceil(scene.height * png.SCALE))
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # not blank: text, reds and blues
    reds = sum(n for n, (r, g, b) in colours if r > 200 and g < 120 and b < 120)
    blues = sum(n for n, (r, g, b) in colours if b > 200 and r < 120 and g < 120)
    assert reds > 100 and blues > 100
