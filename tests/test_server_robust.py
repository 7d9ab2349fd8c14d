"""No input breaks the server: malformed arguments from a fuzzer, client model names that are
paths, a bearer scheme in any case, and several HTTP sessions at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from n2g_mcp.auth import http_app
from n2g_mcp.server import create_server
from tests.fakes import FakeLiveBackend

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install 'n2g-mcp[dev]')")
st = hypothesis.strategies

TOOLS = {
    "list_models": [],
    "search_graphs": ["activating", "context", "words", "model", "layer", "min_f1", "repeated", "exact", "limit",
                      "cursor"],
    "get_graph": ["layer", "neuron", "model"],
    "top_activations": ["layer", "neuron", "model", "limit", "cursor"],
    "find_similar_neurons": ["layer", "neuron", "model", "threshold", "mode", "limit", "by", "layers", "run_model"],
    "render_graph_dot": ["layer", "neuron", "model", "max_nodes", "image"],
    "predict_activations": ["layer", "neuron", "text", "model", "compare", "expect"],
    "score_explanation": ["layer", "neuron", "model", "seed", "predictions", "set_id", "explanation"],
    "build_graph": ["layer", "neuron", "model", "rebuild"],
}
"""Every tool and its parameters."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats()
    | st.text(max_size=30) | st.sampled_from(["../../etc/passwd", "/tmp", "L0/N1", " except", "", "png"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
small_ints = st.integers(min_value=-2, max_value=70)


@st.composite
def calls(draw) -> tuple[str, dict]:
    """A tool and arguments: each parameter left out, well-typed, or anything JSON can carry."""
    tool = draw(st.sampled_from(sorted(TOOLS)))
    args = {}
    for name in TOOLS[tool]:
        choice = draw(st.integers(0, 2))
        if choice == 1:
            args[name] = draw(small_ints if name in ("layer", "neuron", "limit", "max_nodes") else json_values)
        elif choice == 2:
            args[name] = draw(json_values)
    if draw(st.booleans()):
        args[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    return tool, args


def explains(tool: str, message: str) -> bool:
    """An error that says something beyond the SDK's bare crash line, and no traceback."""
    bare = f"Error executing tool {tool}"
    return message.strip() not in (bare, bare + ":") and "Traceback" not in message and len(message) > len(bare) + 10


FUZZ_CALLS: list[int] = []


@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(batch=st.lists(calls(), min_size=5, max_size=12))
def test_malformed_calls_get_explaining_errors_and_the_server_keeps_answering(tmp_path_factory, batch):
    from store.jsonl import write_store
    from tests.conftest import small_store_graphs

    stores = tmp_path_factory.mktemp("stores")
    write_store(stores / "test-model.jsonl.gz", "test-model", small_store_graphs())
    fake = FakeLiveBackend()
    server = create_server(stores, live=fake, models=fake.served())

    async def run() -> None:
        async with Client(server) as client:
            for tool, args in batch:
                result = await client.call_tool(tool, args)
                FUZZ_CALLS.append(1)
                if result.is_error:
                    assert explains(tool, result.content[0].text), (tool, args, result.content[0].text)
            assert not (await client.call_tool("list_models", {})).is_error

    anyio.run(run)


# --------------------------------------------------------------------- models and auth
@pytest.mark.anyio
@pytest.mark.parametrize("name", ["/srv/secret-models/x", "./secret-models", "~/secret-models", "../secret-models",
                                  "secret-models/a/b", "C:\\secret-models"])
async def test_a_path_as_model_is_refused_without_touching_the_disk_or_repeating_it(stores_dir: Path, name, monkeypatch):
    fake = FakeLiveBackend()
    server = create_server(stores_dir, live=fake, models=fake.served(allow_hub=True))
    touched: list[str] = []
    real_stat, real_open = os.stat, open

    def stat(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if "secret-models" in str(path):
            touched.append(str(path))
        return real_stat(path, *args, **kwargs)

    def opened(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if "secret-models" in str(path):
            touched.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr("builtins.open", opened)
    async with Client(server) as client:
        for tool, args in [("build_graph", {"layer": 0, "neuron": 0}), ("search_graphs", {}),
                           ("predict_activations", {"layer": 0, "neuron": 1, "text": "a", "compare": True})]:
            result = await client.call_tool(tool, args | {"model": name})
            assert result.is_error and "not a path" in result.content[0].text
            assert "secret-models" not in result.content[0].text
    assert fake.calls == [] and touched == []


@pytest.mark.anyio
async def test_hub_names_are_refused_unless_the_operator_allows_them(stores_dir: Path):
    fake = FakeLiveBackend()
    closed = create_server(stores_dir, live=fake, models=fake.served())
    async with Client(closed) as client:
        result = await client.call_tool("build_graph", {"layer": 0, "neuron": 0, "model": "EleutherAI/pythia-70m"})
    text = result.content[0].text
    assert result.is_error and "'EleutherAI/pythia-70m': this server does not run it" in text
    assert "--allow-hub-models" in text
    opened = create_server(stores_dir, live=fake, models=fake.served(allow_hub=True))
    async with Client(opened) as client:
        result = await client.call_tool("build_graph", {"layer": 0, "neuron": 0, "model": "EleutherAI/pythia-70m"})
    assert result.is_error and "the fake backend cannot run 'EleutherAI/pythia-70m'" in result.content[0].text


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_bearer_scheme_is_matched_in_any_case(stores_dir: Path, scheme: str):
    fake = FakeLiveBackend()
    app = http_app(create_server(stores_dir, live=fake, models=fake.served()), host="0.0.0.0", token="s3cret")
    async with app.app.router.lifespan_context(app.app), httpx2.ASGITransport(app) as transport:
        async with httpx2.AsyncClient(transport=transport, base_url="http://10.0.0.5:8000") as http:
            wrong = await http.post("/mcp", json={}, headers={"Authorization": f"{scheme} nope"})
            right = await http.post("/mcp", json={}, headers={"Authorization": f"{scheme} s3cret"})
    assert wrong.status_code == 401 and right.status_code != 401


# --------------------------------------------------------------------- load
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.anyio
async def test_several_http_sessions_at_once_for_a_few_seconds_get_no_errors(stores_dir: Path):
    port, sessions, seconds = _free_port(), 4, 4.0
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_server", "--transport", "http", "--port", str(port),
                             "--stores", str(stores_dir)], stderr=subprocess.DEVNULL)
    calls, errors = [0] * sessions, []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await anyio.sleep(0.2)

        async def session(i: int) -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                stop = time.monotonic() + seconds
                while time.monotonic() < stop:
                    tool, args = [("search_graphs", {"activating": [" except"]}), ("get_graph", {"layer": 0, "neuron": 2}),
                                  ("find_similar_neurons", {}), ("get_graph", {"layer": 3, "neuron": 3})][calls[i] % 4]
                    result = await client.call_tool(tool, args)
                    calls[i] += 1
                    if result.is_error != (args == {"layer": 3, "neuron": 3}):
                        errors.append((tool, result.content[0].text))

        with anyio.fail_after(seconds + 120):
            async with anyio.create_task_group() as tg:
                for i in range(sessions):
                    tg.start_soon(session, i)
    finally:
        proc.terminate()
        proc.wait(10)
    assert errors == [] and all(n > 0 for n in calls), (errors[:3], calls)
