"""Answers other tools can take (issue 31): list answers as CSV or JSON lines, attached as MCP
resources and written under the exports folder, read back into the very answer they came from
(search, similarity, find_by_output over the fake model; the induction probe, find_neurons and
ablation over the induction oracle); and a unit's Neuronpedia-like record (export_neuron)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import EmbeddedResource, ResourceLink

from n2g_mcp.exports import EXPORTS_ENV, read_export, rows_from_csv, to_csv
from n2g_mcp.output_results import OutputHit
from n2g_mcp.outputs import FindHit, InductionHit, SearchHit, SimilarItem
from n2g_mcp.server import create_server
from store.probes import NeuronEffect
from tests.fakes import FakeLiveBackend
from tests.fake_files import write_rule_files

pytestmark = pytest.mark.anyio


@pytest.fixture
def exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "exports"
    monkeypatch.setenv(EXPORTS_ENV, str(folder))
    return folder


@pytest.fixture
def server(stores_dir: Path, exports: Path):
    fake = FakeLiveBackend()
    write_rule_files(stores_dir, fake)
    return create_server(stores_dir, live=fake, models=fake.served())


async def exported(server, tool: str, **args) -> tuple[dict, Path, str, str]:
    """A call with format=...: its structured content, the file written, the link's URI and the
    embedded text."""
    async with Client(server) as client:
        result = await client.call_tool(tool, args)
        assert not result.is_error, result.content[0].text
        (link,) = [c for c in result.content if isinstance(c, ResourceLink)]
        (embedded,) = [c for c in result.content if isinstance(c, EmbeddedResource)]
        read = await client.read_resource(link.uri)
    path = Path(link.description.removeprefix("written to "))
    assert read.contents[0].text == embedded.resource.text == path.read_text(encoding="utf-8")
    assert str(link.uri) == f"export://{path.name}" and "Exported" in result.content[0].text
    return result.structured_content, path, str(link.uri), embedded.resource.text


def test_csv_cells_read_back_as_the_values_they_were():
    rows = [SearchHit(id="L1/N2", layer=1, neuron=2, activating_tokens=[' a,"b"', "\n", ""], context_tokens=[],
                      f1=None, explained=0.25).model_dump(mode="json"),
            SearchHit(id="L0/N0", layer=0, neuron=0, activating_tokens=["é"], context_tokens=[" x"], f1=1.0,
                      repeated_tokens=[" x"]).model_dump(mode="json")]
    text = to_csv(rows, SearchHit)
    assert text.splitlines()[0] == ",".join(SearchHit.model_fields)
    assert rows_from_csv(text, SearchHit) == rows


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_an_exported_search_result_read_back_equals_the_answer(server, exports: Path, fmt: str):
    out, path, uri, _ = await exported(server, "search_graphs", activating=[" except"], format=fmt)
    assert out["results"] and path.parent == exports and path.suffix == f".{fmt}"
    assert read_export(path, SearchHit) == out["results"]


async def test_every_list_tool_offers_the_format_option(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("search_graphs", "top_activations", "find_similar_neurons", "find_neurons", "find_induction_neurons",
                 "ablate_neurons", "find_by_output"):
        assert tools[name].input_schema["properties"]["format"]["enum"] == ["text", "csv", "jsonl"], name
    assert "format" not in tools["get_graph"].input_schema["properties"]


async def test_find_by_output_and_similarity_answers_export_too(server):
    out, path, _, _ = await exported(server, "find_by_output", promotes=[" dog"], format="jsonl")
    assert read_export(path, OutputHit) == out["results"] and len(out["results"]) > 4
    out, path, _, _ = await exported(server, "find_similar_neurons", format="csv", threshold=0.5)
    assert read_export(path, SimilarItem) == out["results"] and out["results"]


async def test_the_same_call_writes_the_same_file_and_an_empty_answer_a_header(server):
    _, first, _, _ = await exported(server, "search_graphs", activating=[" except"], format="csv")
    _, again, _, _ = await exported(server, "search_graphs", activating=[" except"], format="csv")
    out, empty, _, text = await exported(server, "search_graphs", activating=[" zebra"], format="csv")
    assert first == again and empty != first and out["results"] == []
    assert text == ",".join(SearchHit.model_fields) + "\n"


async def test_export_neuron_writes_a_neuronpedia_like_record(server):
    fake = FakeLiveBackend()
    out, path, _, text = await exported(server, "export_neuron", layer=0, neuron=1, examples=3)
    assert json.loads(text) == out and path.suffix == ".json"
    assert (out["modelId"], out["layer"], out["index"], out["hookName"]) == ("test-model", 0, 1,
                                                                            "blocks.0.mlp.hook_post")
    assert out["pos_str"][0] == fake.rule(0, 1)[0] and out["neg_str"][0] == fake.rule(0, 1)[1]
    assert len(out["pos_str"]) == len(out["pos_values"]) == 3
    first = out["activations"][0]
    assert len(out["activations"]) == 3 and len(first["tokens"]) == len(first["values"])
    assert first["values"][first["maxValueTokenIndex"]] == first["maxValue"] == out["maxActApprox"]
    assert sum(v is not None for v in first["values"]) == 1
    (explanation,) = out["explanations"]
    assert explanation["typeName"] == "n2g-graph" and fake.rule(0, 1)[0] in explanation["description"]
    assert set(explanation["scores"]) == {"precision", "recall", "f1", "correlation"}


async def test_a_neuron_without_a_graph_exports_without_an_explanation(server):
    out, _, _, _ = await exported(server, "export_neuron", layer=3, neuron=60)
    assert out["explanations"] == [] and out["activations"] and out["pos_str"]


async def test_an_export_name_with_a_folder_in_it_is_refused(server):
    async with Client(server) as client:
        with pytest.raises(Exception, match="not an export|Unknown resource|not found"):
            await client.read_resource("export://..%2Fstores%2Ftest-model.jsonl.gz")
        with pytest.raises(Exception, match="no export named"):
            await client.read_resource("export://nothing.csv")


@pytest.fixture(scope="module")
def oracle_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.induction_oracle import write_oracle_scan

    stores = tmp_path_factory.mktemp("oracle-stores")
    write_oracle_scan(stores)
    return stores


@pytest.fixture
def oracle_server(oracle_stores: Path, exports: Path):
    from tests.induction_oracle import oracle_backend

    backend, models = oracle_backend()
    return create_server(oracle_stores, live=backend, models=models)


async def test_the_probes_answers_export_and_read_back_equal(oracle_server):
    from tests.induction_oracle import INDUCT, INDUCT_LAYER, PROBE_CALLS

    for tool, rows, row_type in (("find_induction_neurons", "results", InductionHit),
                                 ("find_neurons", "results", FindHit),
                                 ("ablate_neurons", "each", NeuronEffect)):
        out, path, _, _ = await exported(oracle_server, tool, **PROBE_CALLS[tool], format="csv")
        assert out[rows] and read_export(path, row_type) == out[rows], tool
    async with Client(oracle_server) as client:
        result = await client.call_tool("ablate_neurons",
                                        {"neurons": [f"L{INDUCT_LAYER}/N{INDUCT}"], "format": "jsonl"})
    assert "Exported 0 rows" in result.content[0].text and "pass each=true" in result.content[0].text


@pytest.mark.parametrize("tool, args", [("search_graphs", {"activating": [" except"], "format": "csv"}),
                                        ("export_neuron", {"layer": 0, "neuron": 1})])
async def test_an_export_names_no_server_folder_to_a_client_that_may_not_see_them(
        stores_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, args: dict):
    """Over HTTP folders are hidden unless the operator asks (issue 27): exports too."""
    monkeypatch.delenv(EXPORTS_ENV, raising=False)
    monkeypatch.setenv("N2G_CACHE", str(tmp_path / "cache"))  # exports go to $N2G_CACHE/exports
    fake = FakeLiveBackend()
    write_rule_files(stores_dir, fake)
    hidden = create_server(stores_dir, live=fake, models=fake.served(), show_paths=False)
    async with Client(hidden) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    (link,) = [c for c in result.content if isinstance(c, ResourceLink)]
    words = [result.content[0].text, link.description]
    assert all(str(tmp_path) not in w for w in words) and "cache" in link.description
    assert (tmp_path / "cache" / "exports" / link.name).is_file()
