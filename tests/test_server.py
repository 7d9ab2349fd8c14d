"""The MCP server's tools, resources and prompts, driven through the SDK's in-memory client.

The store is the small one of ``conftest.py`` (model ``test-model``); the live model is
``FakeLiveBackend``, whose neuron L{l}/N{n} fires on a known word after a known context word.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import numpy as np
import orjson
import pydot
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from n2g_mcp.limits import MAX_DOT_CHARS, MAX_TEXT_CHARS
from n2g_mcp.queries import Queries
from n2g_mcp.server import create_server
from n2g_mcp.tools import TOOLS
from n2g_mcp.tools.stores import search_graphs
from n2g_mcp.worker import ProgressSlot
from store.jsonl import StoreWriter, read_store, write_store
from store.models import ModelSpec
from tests.client import call, error, ok
from tests.fakes import FakeLiveBackend
from store.trie import REPEAT
from tests.graphs import make_graph

pytestmark = pytest.mark.anyio

READ_ONLY_TOOLS = {"list_models", "search_graphs", "get_graph", "top_activations", "find_similar_neurons",
                   "render_graph_dot", "predict_activations", "find_neurons", "find_induction_neurons",
                   "ablate_neurons", "steer_neurons", "test_hypothesis", "score_explanation", "find_by_output",
                   "output_effects", "export_neuron"}


@pytest.fixture
def fake() -> FakeLiveBackend:
    return FakeLiveBackend()


def serve(stores_dir: Path, fake: FakeLiveBackend):
    """A server over a stores directory and the fake live model, which it serves as the default."""
    return create_server(stores_dir, live=fake, models=fake.served())


@pytest.fixture
def server(stores_dir: Path, fake: FakeLiveBackend):
    return serve(stores_dir, fake)


# --------------------------------------------------------------------- listing
async def test_every_tool_is_listed_with_an_output_schema_and_read_only_hints(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_ONLY_TOOLS | {"build_graph"}
    for name, tool in tools.items():
        assert tool.output_schema is not None, name
        assert tool.description, name
        assert tool.annotations.read_only_hint is (name != "build_graph"), name


async def test_the_tools_are_listed_in_the_order_of_their_table(server):
    async with Client(server) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
    assert listed == [tool.function.__name__ for tool in TOOLS]


def test_a_tool_is_a_plain_function_over_the_query_library(stores_dir, fake):
    queries = Queries(stores_dir, fake, fake.served())
    answer = search_graphs(queries, activating=[" except"])
    assert [hit["id"] for hit in answer.structured_content["results"]] == ["L0/N2", "L0/N3"]
    assert answer.content[0].text.startswith("2 graphs of test-model match")


async def test_list_models_counts_graphs_layers_and_says_whether_it_can_build(server):
    data = await ok(server, "list_models")
    (info,) = data["models"]
    assert info | {"files": None} == info | {
        "model": "test-model", "default": True, "graphs": 5, "layers": [0, 1], "n_layers": 4, "d_mlp": 64,
        "corrupt_lines": 0, "can_build": True, "build_note": None, "files": None}
    assert info["files"] == ["test-model.jsonl.gz"]


async def test_list_models_shows_the_default_model_even_before_any_store(tmp_path, fake):
    data = await ok(serve(tmp_path / "none", fake), "list_models")
    assert [(m["model"], m["graphs"]) for m in data["models"]] == [("test-model", 0)]


async def test_a_refused_store_file_is_named_wherever_it_would_have_answered(tmp_path, fake):
    """Only list_models used to say a newer-format store was refused; search and get_graph said
    to build graphs it may well hold."""
    path = tmp_path / "test-model.jsonl"
    write_store(path, "test-model", [make_graph([((" a",), 1.0)], layer=0, neuron=1)])
    header, body = path.read_bytes().split(b"\n", 1)
    path.write_bytes(orjson.dumps(orjson.loads(header) | {"version": 99}) + b"\n" + body)
    server = serve(tmp_path, fake)
    assert (await ok(server, "list_models"))["problems"]
    for tool, args in (("search_graphs", {}), ("get_graph", {"layer": 0, "neuron": 1}),
                       ("find_similar_neurons", {}), ("top_activations", {"layer": 0, "neuron": 1})):
        message = await error(server, tool, **args)
        assert "refused" in message and "test-model.jsonl: store format version 99 is newer" in message, tool
    # And where the model's other stores lack the neuron asked for.
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", [make_graph([((" b",), 1.0)], layer=0, neuron=2)])
    message = await error(serve(tmp_path, fake), "get_graph", layer=0, neuron=1)
    assert "No graph for L0/N1" in message and "test-model.jsonl: store format version 99" in message


async def test_the_servers_folders_are_named_not_shown_where_the_operator_hides_them(stores_dir, fake):
    hidden = create_server(stores_dir, live=fake, models=fake.served(), show_paths=False)
    listed = await call(hidden, "list_models")
    assert listed.structured_content["stores_dir"] is None
    assert str(stores_dir) not in listed.content[0].text and "the server's stores folder" in listed.content[0].text
    message = await error(hidden, "find_neurons", text="a cat")  # needs the scan file, which names its folder
    assert str(stores_dir) not in message and "the server's stores folder" in message
    shown = await ok(serve(stores_dir, fake), "list_models")
    assert shown["stores_dir"] == str(stores_dir)


async def test_list_models_marks_its_counts_partial_while_the_stores_are_being_indexed(tmp_path, fake, monkeypatch):
    import n2g_mcp.resolve
    import store.sqlindex
    from tests.test_sqlindex import scored_graphs

    write_store(tmp_path / "m.jsonl.gz", "m", scored_graphs(3000, seed=8))
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)  # a slice of lines, then answer
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 0.0)  # past the wait: partial
    server = serve(tmp_path, fake)
    result = await call(server, "list_models")
    (early,) = [m for m in result.structured_content["models"] if m["model"] == "m"]
    assert early["partial"] and early["graphs"] < 3000
    assert "so far (still indexing" in result.content[0].text
    for _ in range(600):  # the background indexer finishes within seconds
        (info,) = [m for m in (await ok(server, "list_models"))["models"] if m["model"] == "m"]
        if not info["partial"]:
            break
        await anyio.sleep(0.05)
    assert not info["partial"] and info["graphs"] == 3000


async def test_a_stored_graph_the_index_has_not_reached_is_read_from_the_store_file(tmp_path, monkeypatch):
    """Where a call cannot wait for the index (here: no wait at all, slices of 256 lines), a graph
    the index has not reached is read from the store file: get_graph answers it (it said "not
    indexed yet, call again"), build_graph returns it unbuilt, and no tool calls it missing."""
    import n2g_mcp.resolve
    import store.sqlindex
    from tests.test_sqlindex import scored_graphs

    fake = FakeLiveBackend(n_layers=5, d_mlp=3000)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", scored_graphs(3000, seed=12, model="test-model"))
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)  # a slice of lines, then answer
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    monkeypatch.setattr(n2g_mcp.resolve, "INDEX_WAIT", 0.0)  # past the wait: partial
    server = serve(tmp_path, fake)
    got = await ok(server, "get_graph", layer=4, neuron=2999)  # the store's last line
    assert got["id"] == "L4/N2999"
    built = await ok(server, "build_graph", layer=4, neuron=2999)
    assert built["id"] == "L4/N2999" and not built["built"] and "build" not in fake.calls


async def test_a_never_seen_store_answers_its_first_calls_in_full(tmp_path, monkeypatch):
    """Issue 27: a stores folder the server has not indexed is indexed in the background, and a
    call waits for what its answer needs: the first search counts every graph of the layer (it
    said 46 of 1,536 as if final), get_graph finds the last line (it was "not indexed yet")."""
    import store.sqlindex
    from tests.test_sqlindex import scored_graphs

    fake = FakeLiveBackend(n_layers=5, d_mlp=3000)
    graphs = scored_graphs(3000, seed=13, model="test-model")
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", graphs)
    monkeypatch.setattr(store.sqlindex, "FIRST_SLICE", 0.0)  # many slices: indexing is slow here
    monkeypatch.setattr(store.sqlindex, "SLICE", 0.0)
    server = serve(tmp_path, fake)
    first = await ok(server, "search_graphs", layer=4, limit=1)
    assert first["total"] == sum(g.layer == 4 for g in graphs) and not first["partial"]
    assert (await ok(server, "get_graph", layer=4, neuron=2999))["id"] == "L4/N2999"
    (info,) = (await ok(server, "list_models"))["models"]
    assert info["graphs"] == 3000 and not info["partial"]


async def test_corrupt_store_lines_are_skipped_counted_and_reported(stores_dir, fake):
    graph = make_graph([((" x",), 1.0)], layer=2, neuron=9)
    path = stores_dir / "test-model.jsonl"
    StoreWriter(path, "test-model").append([graph])
    with open(path, "ab") as f:
        f.write(b'{"model": "test-model", "layer": 2, "neur\n')
    server = serve(stores_dir, fake)
    data = await ok(server, "list_models")
    assert data["models"][0]["corrupt_lines"] == 1
    assert "1 corrupt line(s) skipped in test-model.jsonl: line 3" in data["models"][0]["corrupt"][0]
    result = await call(server, "search_graphs", activating=[" x"])
    assert result.structured_content["results"][0]["id"] == "L2/N9"
    assert "corrupt line" in result.content[0].text


async def test_a_file_that_is_not_a_store_is_reported_and_the_others_still_load(stores_dir, server):
    (stores_dir / "notes.jsonl").write_text("hello\n")
    data = await ok(server, "list_models")
    assert data["models"][0]["graphs"] == 5
    assert data["problems"] and "notes.jsonl" in data["problems"][0]


async def test_a_plain_store_overrides_the_shipped_compressed_one_for_the_same_neuron(stores_dir, server):
    StoreWriter(stores_dir / "test-model.jsonl", "test-model").append(
        [make_graph([((" replaced",), 1.0)], layer=0, neuron=2)])
    data = await ok(server, "get_graph", layer=0, neuron=2)
    assert list(data["activating_tokens"]) == [" replaced"]


# --------------------------------------------------------------------- search
async def test_search_matches_tokens_case_and_space_insensitively(server):
    data = await ok(server, "search_graphs", activating=["EXCEPT"], context=["everyone "])
    assert [r["id"] for r in data["results"]] == ["L0/N2", "L0/N3"]
    assert data["results"][0] | {"activating_tokens": [" except", " but"], "f1": 0.8} == data["results"][0]


async def test_search_with_exact_matches_spelling_only(server):
    assert (await ok(server, "search_graphs", activating=["EXCEPT"], exact=True))["results"] == []
    assert (await ok(server, "search_graphs", activating=[" except"], exact=True))["total"] == 2


async def test_search_repeated_finds_the_in_context_neuron(server):
    data = await ok(server, "search_graphs", repeated=True)
    assert [(r["id"], r["repeated_tokens"]) for r in data["results"]] == [("L1/N4", [" Potter", " Harry"])]


async def test_search_repeated_puts_repeat_paths_first_and_skips_case_folded_self_matches(tmp_path: Path, fake):
    """Issue 27: the first hit was a graph whose context 'Th' folds onto its activating 'th'."""
    graphs = [make_graph([(("th", "Th"), 1.0)], layer=1, neuron=392, f1=0.95),          # folded: no repeat
              make_graph([((" b", " a", None, " b"), 1.0)], layer=3, neuron=7, f1=0.9),  # ' b' repeated exactly
              make_graph([((" x", REPEAT), 1.0)], layer=2, neuron=1, f1=0.3)]           # a repeat path
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", graphs)
    server = serve(tmp_path, fake)
    result = await call(server, "search_graphs", repeated=True)
    data = result.structured_content
    assert [(r["id"], r["repeated_tokens"]) for r in data["results"]] == [("L2/N1", ["<repeat>"]), ("L3/N7", [" b"])]
    assert "repeat paths ('<repeat>') first" in result.content[0].text
    async with Client(server) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "search_graphs")
    assert "activating=['<repeat>']" in tool.input_schema["properties"]["repeated"]["description"]


async def test_a_search_hit_counts_the_tokens_it_leaves_out(tmp_path: Path, fake):
    """Issue 27: a hit with 10 activating tokens listed 5 and said '(+3 more)'."""
    words = [f" w{i}" for i in range(10)]
    graph = make_graph([((w, " ctx"), 1.0 - i / 20) for i, w in enumerate(words)], layer=0, neuron=1, f1=0.5)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", [graph])
    result = await call(serve(tmp_path, fake), "search_graphs")
    hit = result.structured_content["results"][0]
    assert (len(hit["activating_tokens"]), hit["activating_total"], hit["context_total"]) == (8, 10, 1)
    assert "' w4' (+5 more)" in result.content[0].text


async def test_search_filters_by_layer_and_min_f1(server):
    assert [r["id"] for r in (await ok(server, "search_graphs", layer=1))["results"]] == ["L1/N4", "L1/N5"]
    assert [r["id"] for r in (await ok(server, "search_graphs", min_f1=0.75))["results"]] == ["L0/N1", "L0/N2"]


async def test_search_pages_with_an_opaque_cursor_until_the_last_page(server):
    seen, cursor = [], None
    async with Client(server) as client:
        for _ in range(5):
            args = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            result = await client.call_tool("search_graphs", args)
            seen += [r["id"] for r in result.structured_content["results"]]
            cursor = result.structured_content["next_cursor"]
            if cursor is None:
                break
            assert f"cursor={cursor!r}" in result.content[0].text
    assert seen == ["L0/N1", "L0/N2", "L0/N3", "L1/N4", "L1/N5"]


async def test_a_cursor_from_another_query_is_refused_with_what_to_do(server):
    first = await ok(server, "search_graphs", limit=1)
    message = await error(server, "search_graphs", limit=1, layer=0, cursor=first["next_cursor"])
    assert "different search_graphs query" in message
    assert "not one this server made" in await error(server, "search_graphs", cursor="garbage!")


async def test_search_that_finds_nothing_says_what_to_try(server):
    result = await call(server, "search_graphs", activating=[" zebra"])
    assert not result.is_error and result.structured_content["total"] == 0
    assert "build_graph" in result.content[0].text


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize("tool", ["get_graph", "top_activations", "render_graph_dot", "find_similar_neurons"])
async def test_a_neuron_with_no_graph_tells_the_agent_to_build_or_search(server, tool):
    message = await error(server, tool, layer=2, neuron=12)
    assert message.endswith("No graph for L2/N12 in store test-model; call build_graph(layer=2, neuron=12) "
                            "or search_graphs first.")


async def test_predict_on_a_neuron_with_no_graph_says_the_same(server):
    message = await error(server, "predict_activations", layer=2, neuron=12, text="hello")
    assert "No graph for L2/N12 in store test-model; call build_graph(layer=2, neuron=12)" in message


@pytest.mark.parametrize(("args", "expected"), [
    ({"layer": 4, "neuron": 0}, "layer 4 is out of range: test-model has layers 0-3"),
    ({"layer": 0, "neuron": 64}, "neuron 64 is out of range: test-model has neurons 0-63 in each layer"),
])
@pytest.mark.parametrize("tool", ["get_graph", "build_graph", "predict_activations", "render_graph_dot"])
async def test_layer_or_neuron_out_of_range_is_an_error_naming_the_range(server, tool, args, expected):
    if tool == "predict_activations":
        args = args | {"text": "a dog"}
    assert expected in await error(server, tool, **args)


async def test_a_negative_layer_is_rejected_by_the_input_schema(server):
    assert "greater than or equal to 0" in await error(server, "get_graph", layer=-1, neuron=0)


async def test_an_unknown_model_lists_the_stores_and_suggests_list_models(server):
    message = await error(server, "get_graph", layer=0, neuron=1, model="gpt-17")
    assert "Unknown model or store 'gpt-17'" in message
    assert "test-model (5 graphs)" in message and "list_models" in message


@pytest.mark.parametrize("name", ["a b; rm -rf /", "/etc", "../secret-models", "~/models/x", "C:\\models"])
async def test_a_model_path_from_a_client_is_refused_without_repeating_it(server, name):
    message = await error(server, "search_graphs", model=name)
    assert "not a path" in message and "list_models" in message
    assert name not in message


async def test_the_server_answers_normally_after_errors(server):
    async with Client(server) as client:
        assert (await client.call_tool("get_graph", {"layer": 99, "neuron": 0})).is_error
        assert (await client.call_tool("predict_activations", {"layer": 0, "neuron": 1, "text": ""})).is_error
        assert not (await client.call_tool("get_graph", {"layer": 0, "neuron": 1})).is_error


# --------------------------------------------------------------------- reading one graph
async def test_get_graph_describes_tokens_fidelity_and_pruned_examples(server):
    data = await ok(server, "get_graph", layer=0, neuron=1)
    assert data["id"] == "L0/N1" and data["activating_tokens"] == {" dog": 1.0}
    assert data["context_tokens"] == {" apple": 0.9}
    assert data["fidelity"]["f1"] == 1.0 and set(data["fidelity"]) == {"precision", "recall", "f1", "correlation"}
    assert 2 <= len(data["examples"]) <= 3
    assert data["examples"][0]["text"].endswith("[[ dog]]")
    assert data["examples"][0]["important_tokens"] == [" apple"]


async def test_top_activations_marks_the_pivot_and_pages(server):
    first = await ok(server, "top_activations", layer=0, neuron=1, limit=3)
    assert first["total"] == 4 and len(first["examples"]) == 3
    assert all("[[ dog]]" in e["text"] for e in first["examples"])
    assert [e["activation"] for e in first["examples"]][:1] == [1.0]
    rest = await ok(server, "top_activations", layer=0, neuron=1, limit=3, cursor=first["next_cursor"])
    assert len(rest["examples"]) == 1 and rest["next_cursor"] is None


# --------------------------------------------------------------------- similar neurons
async def test_similar_neurons_of_a_target_report_both_overlaps(server):
    data = await ok(server, "find_similar_neurons", layer=0, neuron=2)
    assert data["results"] == [{"id": "L0/N3", "layer": 0, "neuron": 3, "similar_to": "L0/N2",
                                "activating_overlap": 1.0, "context_overlap": 1.0}]


async def test_similar_below_the_threshold_names_the_nearest_and_titles_by_the_threshold(tmp_path: Path):
    """Issue 27: at 0.3 it said "build more graphs" with every neuron built and named no nearest
    neuron; at 0.1 it titled overlaps of 0.17 "whose behaviour matches"."""
    fake = FakeLiveBackend(n_layers=1, d_mlp=3)  # three neurons, all with graphs below
    target = make_graph([((" a", " x"), 1.0), ((" b", " x"), 0.9), ((" c", " x"), 0.8)], neuron=0)
    near = make_graph([((t, " x", " y"), 1.0) for t in (" a", " d", " e", " f", " g", " h")], neuron=1)
    apart = make_graph([((" q", " r"), 1.0)], neuron=2)
    write_store(tmp_path / "test-model.jsonl.gz", "test-model", [target, near, apart])
    server = serve(tmp_path, fake)
    result = await call(server, "find_similar_neurons", layer=0, neuron=0, threshold=0.3)
    data, said = result.structured_content, result.content[0].text
    assert data["results"] == [] and data["neurons"] == data["compared"] == 3
    assert (data["nearest"]["id"], data["nearest"]["activating_overlap"], data["nearest"]["context_overlap"]) == \
        ("L0/N1", pytest.approx(1 / 6, abs=1e-3), 0.5)
    assert "The nearest is L0/N1: activating overlap 0.17, context 0.50 (threshold=0.16" in said
    assert "build" not in said and "Every neuron of test-model has a graph here: no neuron is left out" in said
    result = await call(server, "find_similar_neurons", layer=0, neuron=0, threshold=0.1)
    assert [r["id"] for r in result.structured_content["results"]] == ["L0/N1"]
    assert "overlapping L0/N0's token sets by at least 0.10" in result.content[0].text
    assert "matches" not in result.content[0].text and result.structured_content["nearest"] is None


async def test_similar_with_no_candidate_says_so_and_how_many_neurons_lack_graphs(server):
    result = await call(server, "find_similar_neurons", layer=1, neuron=5)
    assert result.structured_content["nearest"] is None
    assert "No graph shares an activating token with it" in result.content[0].text
    assert "(5 of 256 neurons have graphs)" in result.content[0].text


async def test_without_a_target_the_most_similar_pairs_are_listed(server):
    data = await ok(server, "find_similar_neurons")
    assert data["target"] is None
    assert [(r["similar_to"], r["id"]) for r in data["results"]] == [("L0/N2", "L0/N3")]


async def test_a_pair_search_past_its_work_limit_answers_partial_and_says_how_to_narrow_it(server, monkeypatch):
    monkeypatch.setattr("n2g_mcp.store_queries.MAX_PAIR_VISITS", 0)
    data = await ok(server, "find_similar_neurons", threshold=0.0)
    assert data["partial"] is True
    # The pair the index keeps (both overlaps 1.0) is sure, and listed.
    assert [(r["similar_to"], r["id"]) for r in data["results"]][:1] == [("L0/N2", "L0/N3")]
    warning = data["warnings"][-1]
    assert "stopped after" in warning and "pass a layer" in warning and "threshold of at least 0.7" in warning


async def test_a_cancelled_pair_search_stops_its_worker(stores_dir, fake, monkeypatch):
    from store.similarity import PairBudget

    saw_cancel, spend = threading.Event(), PairBudget.spend

    def waiting_spend(self: PairBudget, visits: int) -> None:
        if self.cancel is not None and self.cancel.wait(5):
            saw_cancel.set()
        spend(self, visits)  # raises Cancelled now

    monkeypatch.setattr(PairBudget, "spend", waiting_spend)
    async with Client(serve(stores_dir, fake)) as client:
        with anyio.move_on_after(0.5):
            await client.call_tool("find_similar_neurons", {"threshold": 0.0})
            pytest.fail("the search should still be running")
        assert await anyio.to_thread.run_sync(saw_cancel.wait, 5)
        assert not (await client.call_tool("list_models", {})).is_error


async def test_subset_mode_finds_neurons_containing_the_targets_behaviour(stores_dir, fake):
    StoreWriter(stores_dir / "test-model.jsonl", "test-model").append(
        [make_graph([((" except", " everyone"), 0.9), ((" but", " everyone"), 0.6), ((" save", " all"), 0.6)],
                    layer=1, neuron=20)])
    server = serve(stores_dir, fake)
    similar = await ok(server, "find_similar_neurons", layer=0, neuron=2)
    subset = await ok(server, "find_similar_neurons", layer=0, neuron=2, mode="subset")
    assert "L1/N20" not in [r["id"] for r in similar["results"]]
    assert "L1/N20" in [r["id"] for r in subset["results"]]


async def test_subset_mode_without_a_target_or_a_neuron_without_layer_is_an_error(server):
    assert "pass both layer and neuron" in await error(server, "find_similar_neurons", mode="subset")
    assert "pass layer with neuron" in await error(server, "find_similar_neurons", neuron=3)


# --------------------------------------------------------------------- render
async def test_render_returns_dot_that_graphviz_parses(server):
    data = await ok(server, "render_graph_dot", layer=0, neuron=2)
    (graph,) = pydot.graph_from_dot_data(data["dot"])
    labels = {n.get_label().strip('"').rsplit("\\n", 1)[0] for n in graph.get_nodes() if n.get_label()}
    assert {"␣except", "␣everyone"} <= labels  # the token, its leading space shown; its number below
    assert data["shown_nodes"] == data["nodes"] == 3


async def test_a_huge_graph_is_redrawn_with_fewer_nodes_to_fit_the_cap(stores_dir, fake):
    paths = [((f" tok{i}", f" ctx{i}", f" pre{i}"), 1.0 - i / 1000) for i in range(400)]
    StoreWriter(stores_dir / "test-model.jsonl", "test-model").append([make_graph(paths, layer=3, neuron=3)])
    result = await call(serve(stores_dir, fake), "render_graph_dot", layer=3, neuron=3, max_nodes=500)
    data = result.structured_content
    assert len(data["dot"]) <= MAX_DOT_CHARS and data["max_nodes"] < 500
    assert data["shown_nodes"] < data["nodes"] == 1200
    assert "to stay under" in result.content[0].text
    assert pydot.graph_from_dot_data(data["dot"])


# --------------------------------------------------------------------- predict
async def test_predict_without_compare_uses_the_tokenizer_only(server, fake):
    data = await ok(server, "predict_activations", layer=0, neuron=1, text="an apple dog, a dog")
    assert data["tokens"] == ["an", " apple", " dog", ",", " a", " dog"]
    assert data["predicted"] == [0.0, 0.0, 1.0, 0.0, 0.0, 0.25]
    assert data["actual"] is None and data["agreement"] is None
    assert fake.calls == ["tokens"]


async def test_predict_with_compare_normalises_the_real_neuron_and_scores_agreement(server, fake):
    # ' dog' three tokens after ' apple': the real neuron fires (4.0 / 4.0), the graph misses it.
    data = await ok(server, "predict_activations", layer=0, neuron=1, compare=True,
                    text="an apple dog. an apple big old dog. a dog")
    assert data["actual"] == [a / 4.0 for a in fake.raw(0, 1, data["tokens"])]
    fires = [r["index"] for r in data["firing"]]
    assert data["agreement"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667,
                                 "correlation": data["agreement"]["correlation"]}
    assert len(fires) == 2 and fake.calls == ["tokens", "activations"]


@pytest.mark.parametrize(("text", "expect", "compare", "said", "as_expected"), [
    # Issue 27: a positive test the agent wrote was called "a good negative test".
    ("a cat sat", None, True, "Neither the graph nor the real neuron fires on this text.", None),
    ("a cat sat", "fire", True, "Expected to fire, but the real neuron stays silent: this text does not bear "
     "it out.", False),
    ("a cat sat", "silent", True, "As expected, the real neuron stays silent: the negative test holds.", True),
    ("an apple big old dog", "fire", True, "As expected, the real neuron fires on 1 token. The graph predicts "
     "none of it: the graph misses this case.", True),
    ("an apple dog", "silent", False, "Expected silence, but the graph predicts firing on 1 token: a "
     "counterexample. compare=true checks the real neuron.", False),
])
async def test_predict_words_its_verdict_by_what_the_caller_expected(server, text, expect, compare, said,
                                                                     as_expected):
    args = {"expect": expect} if expect else {}
    result = await call(server, "predict_activations", layer=0, neuron=1, text=text, compare=compare, **args)
    assert said in result.content[0].text and "good negative test" not in result.content[0].text
    assert (result.structured_content["expect"], result.structured_content["as_expected"]) == (expect, as_expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("", "text is empty"), ("   \n", "text is empty"),
    ("x" * (MAX_TEXT_CHARS + 1), f"over the limit of {MAX_TEXT_CHARS}; split it"),
])
async def test_empty_or_oversized_text_is_refused_before_the_model_runs(server, fake, text, expected):
    assert expected in await error(server, "predict_activations", layer=0, neuron=1, text=text, compare=True)
    assert fake.calls == []


async def test_a_text_over_the_compare_token_cap_is_refused_before_the_model_runs(server, fake):
    message = await error(server, "predict_activations", layer=0, neuron=1, text=" a" * 4097, compare=True)
    assert "text has 4097 tokens; compare=true runs the real neuron on at most 4096 tokens" in message
    assert fake.calls == ["tokens"]


# --------------------------------------------------------------------- build
async def test_build_adds_the_graph_to_the_writable_store_and_search_finds_it(stores_dir, server, fake):
    data = await ok(server, "build_graph", layer=2, neuron=7)
    act, ctx = fake.rule(2, 7)
    assert data["built"] is True and data["id"] == "L2/N7" and list(data["activating_tokens"]) == [act]
    assert set(data["fidelity"]) == {"precision", "recall", "f1", "correlation"}
    assert (2, 7) in read_store(stores_dir / "test-model.jsonl").graphs
    assert [r["id"] for r in (await ok(server, "search_graphs", activating=[act]))["results"]] == ["L2/N7"]


async def test_build_returns_the_stored_graph_unless_asked_to_rebuild(server, fake):
    assert (await ok(server, "build_graph", layer=0, neuron=1))["built"] is False
    assert fake.calls == []
    assert (await ok(server, "build_graph", layer=0, neuron=1, rebuild=True))["built"] is True
    assert fake.calls == ["build"]


async def test_build_runs_the_atlas_method_unless_the_fitted_one_is_asked_for(server, fake):
    await ok(server, "build_graph", layer=2, neuron=7)
    await ok(server, "build_graph", layer=2, neuron=8, method="fitted")
    assert fake.methods == ["ordinary", "fitted"]
    message = await error(server, "build_graph", layer=2, neuron=9, method="paper")
    assert "method" in message and fake.methods == ["ordinary", "fitted"]


async def test_build_reports_increasing_progress(stores_dir):
    server = serve(stores_dir, FakeLiveBackend(delay=0.3))
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(done, total, message):
        updates.append((done, total, message))

    async with Client(server) as client:
        result = await client.call_tool("build_graph", {"layer": 3, "neuron": 5}, progress_callback=progress)
    assert not result.is_error
    values = [u[0] for u in updates]
    assert len(updates) >= 3 and values == sorted(set(values)) and all(u[1] == 100 for u in updates)
    assert any(u[2] == "prune (fake) (1/4)" for u in updates)


def test_progress_only_grows_across_phases_and_stays_below_100():
    slot = ProgressSlot()
    sent = []
    for done, total, message in [(0, 1, "loading"), (5, 10, "scan"), (10, 10, "scan"), (0, 1, "build"),
                                 (1, 1, "build"), (1, 1, "build")]:
        slot.set(done, total, message)
        sent.append(slot.take())
    assert [round(p) for p, _ in sent] == [0, 25, 50, 50, 75, 75]
    assert [p for p, _ in sent] == sorted({p for p, _ in sent})
    assert sent[1][1] == "scan (5/10)"
    assert slot.take() is None
    heartbeat = slot.take(heartbeat=True)
    assert heartbeat[0] > sent[-1][0] and heartbeat[1] == "build"


async def test_a_cancelled_build_stops_its_worker_and_writes_nothing(stores_dir):
    fake = FakeLiveBackend(delay=0.4)
    server = serve(stores_dir, fake)
    async with Client(server) as client:
        with anyio.move_on_after(0.5):
            await client.call_tool("build_graph", {"layer": 3, "neuron": 6})
            pytest.fail("the build should still be running")
        assert await anyio.to_thread.run_sync(fake.cancelled.wait, 5)
        assert not (stores_dir / "test-model.jsonl").exists()
        assert not (await client.call_tool("list_models", {})).is_error


async def test_build_for_a_model_the_backend_cannot_build_says_why(tmp_path, fake):
    message = await error(serve(tmp_path, fake), "build_graph", layer=0, neuron=0, model="other-lm")
    assert "Unknown model or store 'other-lm': this server does not run it" in message
    assert "It runs test-model (default test-model)" in message and "--model NAME=PATH" in message


async def test_a_stored_model_the_server_does_not_run_is_read_but_not_built(stores_dir, fake):
    write_store(stores_dir / "other.jsonl.gz", "other-lm", [make_graph([((" a",), 1.0)], model="other-lm")])
    server = serve(stores_dir, fake)
    assert (await ok(server, "get_graph", layer=0, neuron=0, model="other-lm"))["id"] == "L0/N0"
    message = await error(server, "build_graph", layer=0, neuron=1, model="other-lm")
    assert "Cannot build graphs for other-lm here: this server does not run other-lm" in message


# --------------------------------------------------------------------- resources and prompts
async def test_the_graph_resource_serves_the_description(server):
    async with Client(server) as client:
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["graph://{model}/{layer}/{neuron}", "export://{name}"]
        contents = (await client.read_resource("graph://test-model/0/2")).contents
    assert '"id": "L0/N2"' in contents[0].text and contents[0].mime_type == "application/json"


async def test_a_missing_graph_resource_is_an_error_with_the_hint(server):
    async with Client(server) as client:
        with pytest.raises(MCPError, match="call build_graph"):
            await client.read_resource("graph://test-model/2/12")


async def test_the_four_workflow_prompts_render_with_their_arguments(server):
    async with Client(server) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert {"find-induction-neurons", "test-hypothesis", "find-duplicate-neurons", "explain-neuron"} <= set(prompts)
        assert {a.name for a in prompts["test-hypothesis"].arguments if a.required} == {"layer", "neuron"}
        rendered = await client.get_prompt("test-hypothesis", {"layer": "3", "neuron": "17", "hypothesis": "commas"})
    text = rendered.messages[0].content.text
    assert "L3/N17" in text and "Hypothesis: commas" in text and "compare=true" in text
    assert "{" not in text.split("Hypothesis")[0]


# --------------------------------------------------------------------- the real backend, without a model
def test_searching_and_rendering_never_import_torch_or_the_builder(stores_dir):
    script = f"""
import sys, anyio
from pathlib import Path
from mcp import Client
from n2g_mcp.server import create_server
server = create_server(Path({str(stores_dir)!r}))
async def main():
    async with Client(server) as c:
        for tool, args in [("list_models", {{}}), ("search_graphs", {{"repeated": True}}),
                           ("get_graph", {{"layer": 0, "neuron": 2}}), ("render_graph_dot", {{"layer": 0, "neuron": 2}}),
                           ("find_similar_neurons", {{}}), ("top_activations", {{"layer": 0, "neuron": 1}})]:
            result = await c.call_tool(tool, args | {{"model": "test-model"}})
            assert not result.is_error, result.content[0].text
anyio.run(main)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "transformer_lens", "builder")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_live_layer_loads_a_model_once_under_concurrent_calls(monkeypatch):
    import builder.run.live as live

    loads: list[str] = []

    class Model:
        name, vocab = "m", ["a", "b", "c"]

        def encode(self, text):
            return [["a", "b", "c"].index(t) for t in text.split()]

        def check_layer(self, layer):
            pass

        check_neuron = check_layer

    def load_model(location, **options):
        loads.append(location)
        time.sleep(0.2)
        return Model()

    monkeypatch.setattr(live, "load_model", load_model)
    monkeypatch.setattr(live, "long_activations", lambda model, layer, ids, neurons: np.ones((len(ids), 1)))
    models, spec = live.LiveModels(), ModelSpec(name="m", location="m")
    threads = [threading.Thread(target=models.activations, args=(spec, 0, 0, "a b")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["m"]
    assert models.activations(spec, 0, 0, "a b c") == (["a", "b", "c"], [1.0, 1.0, 1.0])


async def test_get_graph_shows_each_pruned_example_text_once(stores_dir, fake):
    graph = fake.graph("test-model", 2, 2)
    graph.pruned = [graph.pruned[0]] * 3 + graph.pruned
    StoreWriter(stores_dir / "test-model.jsonl", "test-model").append([graph])
    data = await ok(serve(stores_dir, fake), "get_graph", layer=2, neuron=2)
    texts = [e["text"] for e in data["examples"]]
    assert len(texts) == len(set(texts)) == 2


async def test_for_a_model_of_unknown_shape_the_store_gives_the_range_hint(stores_dir, fake):
    StoreWriter(stores_dir / "other.jsonl", "other-lm").append([make_graph([((" a",), 1.0)], model="other-lm")])
    message = await error(serve(stores_dir, fake), "get_graph", layer=40, neuron=1, model="other-lm")
    assert "No graph for L40/N1 in store other-lm; call build_graph(layer=40, neuron=1, model='other-lm') " \
           "or search_graphs first. (The store has graphs in layers 0-0 only.)" in message
