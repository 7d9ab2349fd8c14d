"""DOT rendering: the paper's drawing rules, escaping, and the node cap."""

from __future__ import annotations

import shutil
import subprocess

import pydot
import pytest

from store.graph import NeuronGraph
from store.render import REPEAT_LABEL, render_summary, to_dot
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


def nodes(graph: pydot.Dot) -> dict[str, pydot.Node]:
    """Drawn nodes by label text as written in the DOT source (defaults and rank groups left out)."""
    found = {}
    for node in graph.get_nodes() + [n for s in graph.get_subgraphs() for n in s.get_nodes()]:
        label = node.get("label")
        if label is not None:
            found[unquote(label)] = node
    return found


def edges(graph: pydot.Dot) -> set[tuple[str, str]]:
    labels = {n.get_name(): unquote(n.get("label")) for n in graph.get_nodes() if n.get("label")}
    return {(labels[e.get_source()], labels[e.get_destination()]) for e in graph.get_edges()}


def test_dot_parses_and_is_a_digraph() -> None:
    assert parse(to_dot(FIGURE_1)).get_type() == "digraph"


def test_title_names_the_neuron_and_model() -> None:
    title = unquote(parse(to_dot(FIGURE_1)).get("label"))
    assert "L1/N404" in title and "solu-6l" in title


def test_ignore_nodes_are_removed_and_bridge_their_neighbours() -> None:
    graph = parse(to_dot(FIGURE_1))
    assert set(nodes(graph)) == {" everyone", " all", " except", " but"}
    assert (" except", " everyone") in edges(graph)


def test_identical_tokens_at_the_same_depth_are_merged() -> None:
    # " except" stands at depth 1 (after ignores are removed) under both activating tokens.
    labels = [unquote(n.get("label")) for n in parse(to_dot(FIGURE_1)).get_nodes() if n.get("label")]
    assert labels.count(" except") == 1
    assert (" except", " all") in edges(parse(to_dot(FIGURE_1)))


def test_identical_tokens_at_different_depths_stay_apart() -> None:
    graph = make_graph([((" a", " b", " a"), 1.0)])
    labels = [unquote(n.get("label")) for n in parse(to_dot(graph)).get_nodes() if n.get("label")]
    assert labels.count(" a") == 2


def test_edges_run_from_context_to_the_activating_token() -> None:
    assert edges(parse(to_dot(FIGURE_1))) == {
        (" except", " everyone"), (" but", " everyone"), (" except", " all")}


def test_nodes_where_a_path_ends_are_bold() -> None:
    drawn = nodes(parse(to_dot(FIGURE_1)))
    for label in (" except", " but", " everyone"):  # " everyone" alone is a path too
        assert "bold" in unquote(drawn[label].get("style")), label
    assert "bold" not in unquote(drawn[" all"].get("style") or "")


def test_activating_nodes_are_red_and_context_nodes_blue_by_strength() -> None:
    drawn = nodes(parse(to_dot(FIGURE_1)))
    assert unquote(drawn[" everyone"].get("fillcolor")) == "#ff1919"  # activation 0.9
    assert unquote(drawn[" except"].get("fillcolor")) == "#0000ff"  # importance 1.0
    assert unquote(drawn[" but"].get("fillcolor")) == "#9999ff"  # importance 0.4


def test_repeat_nodes_are_drawn_as_dashed_green_ellipses_merged_per_depth() -> None:
    graph = make_graph([((REPEAT, REPEAT), 1.0), ((" b", REPEAT), 0.6), ((" c",), 0.5)])
    drawn = parse(to_dot(graph))
    repeats = [n for n in drawn.get_nodes() if unquote(n.get("label") or '""') == REPEAT_LABEL]
    assert len(repeats) == 2  # one at depth 0 (the wildcard), one at depth 1 (shared)
    for node in repeats:
        assert node.get("shape") == "ellipse" and "dashed" in unquote(node.get("style"))
        assert unquote(node.get("fillcolor")).startswith("#00")  # green at full strength
    assert nodes(drawn)[" c"].get("shape") is None  # literal tokens keep the default box
    assert (REPEAT_LABEL, " b") in edges(drawn) and (REPEAT_LABEL, REPEAT_LABEL) in edges(drawn)


def test_strengths_outside_zero_to_one_are_clamped() -> None:
    graph = make_graph([((" a", " b"), 1.7, [-0.5])])
    drawn = nodes(parse(to_dot(graph)))
    assert unquote(drawn[" a"].get("fillcolor")) == "#ff0000"
    assert unquote(drawn[" b"].get("fillcolor")) == "#ffffff"


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
    assert set(nodes(parse(dot))) == {" a9", " c9", " a8", " c8"}
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
@pytest.mark.parametrize("graph", [FIGURE_1, make_graph([(('q"\\\n', "\t", " "), 1.0)])])
def test_graphviz_renders_the_dot_as_svg(graph: NeuronGraph) -> None:
    result = subprocess.run(["dot", "-Tsvg"], input=to_dot(graph), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout
