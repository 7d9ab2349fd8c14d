"""What a client we did not write sees: descriptions, argument leniency and strictness, schemas,
pictures, cursors, and the MCP Inspector CLI driving the real command over stdio."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from mcp import Client

from n2g_mcp.server import create_server
from tests.fake_files import write_rule_files
from tests.fakes import FakeLiveBackend
from tests.induction_oracle import PROBE_CALLS

pytestmark = pytest.mark.anyio

ONE_CALL_EACH = {
    "list_models": {},
    "search_graphs": {"activating": [" except"]},
    "get_graph": {"layer": 0, "neuron": 2},
    "top_activations": {"layer": 0, "neuron": 1, "limit": 2},
    "find_similar_neurons": {"layer": 0, "neuron": 2},
    "render_graph_dot": {"layer": 0, "neuron": 2},
    "predict_activations": {"layer": 0, "neuron": 1, "text": "an apple dog", "compare": True},
    "build_graph": {"layer": 2, "neuron": 3},
    "export_neuron": {"layer": 0, "neuron": 2},
    "find_by_output": {"promotes": [" dog"]},
    "output_effects": {"layer": 0, "neuron": 1, "windows": 2},
}
"""One successful call of every tool but the whole-model probes, over the conftest store, the fake
model's output-token and scan files (``tests/fake_files.py``) and the fake live model. The probes
need a real forward pass: ``PROBE_CALLS`` calls them over the induction oracle
(``tests/test_server_probes.py`` validates their schemas in process)."""


@pytest.fixture
def server(stores_dir: Path):
    fake = FakeLiveBackend()
    return create_server(stores_dir, live=fake, models=fake.served())


async def test_every_tools_structured_output_validates_against_its_published_schema(server, stores_dir):
    write_rule_files(stores_dir, FakeLiveBackend())
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == set(ONE_CALL_EACH) | set(PROBE_CALLS)
        for name, args in ONE_CALL_EACH.items():
            result = await client.call_tool(name, args)
            assert not result.is_error, (name, result.content[0].text)
            jsonschema.validate(result.structured_content, tools[name].output_schema)


async def test_tool_descriptions_carry_no_source_indentation(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name, tool in tools.items():
        assert "\n " not in tool.description and tool.description == tool.description.strip(), name
    assert "compare=true takes at most 4,096 tokens" in tools["predict_activations"].description


async def test_a_single_token_is_taken_where_a_list_of_tokens_is_expected(server):
    async with Client(server) as client:
        one = await client.call_tool("search_graphs", {"activating": " except", "context": " everyone"})
        listed = await client.call_tool("search_graphs", {"activating": [" except"], "context": [" everyone"]})
    assert not one.is_error and one.structured_content["results"] == listed.structured_content["results"]
    assert [r["id"] for r in one.structured_content["results"]] == ["L0/N2", "L0/N3"]


@pytest.mark.parametrize(("args", "field"), [
    ({"layer": True, "neuron": 2}, "layer"),
    ({"layer": "0", "neuron": 2}, "layer"),
    ({"layer": 0, "neuron": 2.0}, "neuron"),
    ({"layer": 0, "neuron": 2, "model": 7}, "model"),
])
async def test_arguments_of_the_wrong_type_are_refused_in_words(server, args, field):
    async with Client(server) as client:
        result = await client.call_tool("get_graph", args)
    message = result.content[0].text
    assert result.is_error and f"{field}: " in message and "do not fit its parameters" in message
    assert "errors.pydantic.dev" not in message


async def test_a_flag_given_as_a_string_is_refused(server):
    async with Client(server) as client:
        result = await client.call_tool("predict_activations", {"layer": 0, "neuron": 1, "text": "a", "compare": "yes"})
    assert result.is_error and "compare: Input should be a valid boolean" in result.content[0].text


async def test_a_tampered_or_foreign_cursor_is_refused_and_says_how_to_start_over(server, stores_dir):
    async with Client(server) as client:
        first = (await client.call_tool("search_graphs", {"limit": 1})).structured_content["next_cursor"]
        body, _, signature = first.partition(".")
        forged = base64.urlsafe_b64encode(json.dumps({"o": 10**30, "q": "x"}).encode()).decode().rstrip("=")
        for cursor in (f"{forged}.{signature}", first[:-2] + "AA"):
            result = await client.call_tool("search_graphs", {"limit": 1, "cursor": cursor})
            assert result.is_error and "not one this server made" in result.content[0].text
            assert "without cursor" in result.content[0].text
    other = FakeLiveBackend()
    async with Client(create_server(stores_dir, live=other, models=other.served())) as foreign:
        assert "not one this server made" in (await foreign.call_tool("search_graphs", {"cursor": first})).content[0].text


# --------------------------------------------------------------------- pictures
@pytest.fixture
def no_graphviz(monkeypatch, tmp_path):
    """A PATH with no Graphviz on it: the pictures must not need one (a fresh set-up has none)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("dot") is None


async def test_render_attaches_a_png_image_when_asked(server, no_graphviz):
    async with Client(server) as client:
        result = await client.call_tool("render_graph_dot", {"layer": 0, "neuron": 2, "image": "png"})
    text, image = result.content
    assert image.type == "image" and image.mime_type == "image/png"
    assert base64.b64decode(image.data).startswith(b"\x89PNG")
    assert result.structured_content["image"] == "png" and "attached as PNG" in text.text


async def test_render_attaches_svg_as_an_embedded_resource(server, no_graphviz):
    async with Client(server) as client:
        result = await client.call_tool("render_graph_dot", {"layer": 0, "neuron": 2, "image": "svg"})
    resource = result.content[1].resource
    assert resource.mime_type == "image/svg+xml" and "<svg" in resource.text
    assert "␣except" in resource.text  # the leading space shows


async def test_without_pillow_a_png_request_says_why_and_keeps_the_dot(server, monkeypatch):
    import store.png

    def missing() -> None:
        raise RuntimeError("PNG needs Pillow: pip install pillow (or ask for SVG instead)")

    monkeypatch.setattr(store.png, "_pil", missing)
    async with Client(server) as client:
        result = await client.call_tool("render_graph_dot", {"layer": 0, "neuron": 2, "image": "png"})
    assert not result.is_error and len(result.content) == 1
    assert "pip install pillow" in result.content[0].text and result.structured_content["image"] is None
    assert "digraph" in result.structured_content["dot"]


# --------------------------------------------------------------------- the Inspector
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"


def inspector(stores_dir: Path, *args: str, server: str = "tests.fake_server") -> dict:
    """Run the MCP Inspector CLI against the n2g-mcp command (over a test model) over stdio."""
    root = Path(__file__).resolve().parents[1]
    command = ["npx", "-y", INSPECTOR, "--cli", *args, "--connect-timeout", "180000", "-e", f"PYTHONPATH={root}", "--cwd", str(root),
               sys.executable, "-m", server, "--stores", str(stores_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"npm_config_update_notifier": "false"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("npx") is None, reason="node/npx is not installed, so the Inspector CLI cannot run")
def test_the_mcp_inspector_lists_and_calls_every_tool_prompt_and_template(stores_dir: Path):
    write_rule_files(stores_dir, FakeLiveBackend())
    tools = inspector(stores_dir, "--method", "tools/list")["tools"]
    assert {t["name"] for t in tools} == set(ONE_CALL_EACH) | set(PROBE_CALLS)
    calls = [(name, args, "tests.fake_server") for name, args in ONE_CALL_EACH.items()]
    calls += [(name, args, "tests.oracle_server") for name, args in PROBE_CALLS.items()]
    for name, args, server in calls:
        pairs = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items()]
        result = inspector(stores_dir, "--method", "tools/call", "--tool-name", name,
                           *(["--tool-arg", *pairs] if pairs else []), server=server)
        assert not result.get("isError"), (name, result)
        assert result["structuredContent"], name
    prompts = inspector(stores_dir, "--method", "prompts/list")["prompts"]
    assert {"find-induction-neurons", "test-hypothesis", "find-duplicate-neurons", "explain-neuron"} <= {
        p["name"] for p in prompts}
    templates = inspector(stores_dir, "--method", "resources/templates/list")["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["graph://{model}/{layer}/{neuron}", "export://{name}"]
