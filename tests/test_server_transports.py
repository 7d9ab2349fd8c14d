"""The server over its real transports: a stdio subprocess, and Streamable HTTP (in process and
through uvicorn), with the bearer token required beyond loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from n2g_mcp.auth import http_app
from n2g_mcp.server import create_server
from tests.fakes import FakeLiveBackend

pytestmark = pytest.mark.anyio


FAKE_SERVER = [sys.executable, "-m", "tests.fake_server"]
"""The n2g-mcp command over the fake live model (tests/fake_server.py)."""


def fake_server(stores_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(command=FAKE_SERVER[0], args=[*FAKE_SERVER[1:], "--stores", str(stores_dir)],
                                 env=dict(os.environ))


def served(stores_dir: Path):
    fake = FakeLiveBackend()
    return create_server(stores_dir, live=fake, models=fake.served())


async def test_over_stdio_a_subprocess_searches_builds_predicts_and_survives_errors(stores_dir):
    async with Client(fake_server(stores_dir)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"build_graph", "predict_activations", "search_graphs", "find_similar_neurons"} <= tools
        found = await client.call_tool("search_graphs", {"activating": [" except"]})
        assert [r["id"] for r in found.structured_content["results"]] == ["L0/N2", "L0/N3"]
        missing = await client.call_tool("get_graph", {"layer": 2, "neuron": 12})
        assert missing.is_error and "call build_graph(layer=2, neuron=12)" in missing.content[0].text
        listed = await client.call_tool("list_models", {})  # a local user sees the folders
        assert listed.structured_content["stores_dir"] == str(stores_dir.resolve())
        built = await client.call_tool("build_graph", {"layer": 2, "neuron": 12})
        assert built.structured_content["built"] is True
        act, ctx = FakeLiveBackend.rule(2, 12)
        compared = await client.call_tool("predict_activations", {
            "layer": 2, "neuron": 12, "text": f"one{ctx}{act}", "compare": True})
        assert compared.structured_content["actual"][-1] == 1.0
        assert compared.structured_content["agreement"]["f1"] == 1.0
    assert (stores_dir / "test-model.jsonl").exists()


async def test_over_http_in_process_the_tools_answer(stores_dir):
    app = http_app(served(stores_dir))
    async with (
        app.router.lifespan_context(app),
        httpx2.ASGITransport(app) as transport,
        httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http,
        Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("find_similar_neurons", {"layer": 0, "neuron": 2})
        assert [r["id"] for r in result.structured_content["results"]] == ["L0/N3"]
        dot = await client.call_tool("render_graph_dot", {"layer": 0, "neuron": 2})
        assert dot.structured_content["dot"].startswith("// N2G neuron graph L0/N2")


async def test_over_http_beyond_loopback_a_bearer_token_is_required(stores_dir):
    server = served(stores_dir)
    with pytest.raises(ValueError, match="pass --token or set N2G_MCP_TOKEN"):
        http_app(server, host="0.0.0.0")
    app = http_app(server, host="0.0.0.0", token="s3cret")
    async with app.app.router.lifespan_context(app.app), httpx2.ASGITransport(app) as transport:
        async with httpx2.AsyncClient(transport=transport, base_url="http://10.0.0.5:8000") as anonymous:
            refused = await anonymous.post("/mcp", json={})
            assert refused.status_code == 401 and "bearer" in refused.text
        headers = {"Authorization": "Bearer s3cret"}
        async with (
            httpx2.AsyncClient(transport=transport, base_url="http://10.0.0.5:8000", headers=headers) as http,
            Client(streamable_http_client("http://10.0.0.5:8000/mcp", http_client=http)) as client,
        ):
            assert not (await client.call_tool("list_models", {})).is_error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_command_serves_streamable_http_through_uvicorn(stores_dir):
    port = _free_port()
    proc = subprocess.Popen([*FAKE_SERVER, "--transport", "http", "--port", str(port), "--stores", str(stores_dir)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            result = await client.call_tool("search_graphs", {"repeated": True})
            assert [r["id"] for r in result.structured_content["results"]] == ["L1/N4"]
            # A client over HTTP may be anyone: the server's folders are not shown to it.
            listed = await client.call_tool("list_models", {})
            assert listed.structured_content["stores_dir"] is None
            missing = await client.call_tool("find_neurons", {"text": "a cat"})
            assert missing.is_error and str(stores_dir) not in missing.content[0].text
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_command_refuses_a_public_address_without_a_token(stores_dir):
    env = {k: v for k, v in os.environ.items() if k != "N2G_MCP_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "n2g_mcp", "--transport", "http", "--host", "0.0.0.0",
                           "--stores", str(stores_dir)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "pass --token or set N2G_MCP_TOKEN" in done.stderr
    assert done.stdout == ""
