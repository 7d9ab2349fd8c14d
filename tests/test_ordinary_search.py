"""Search over graphs scored on ordinary text (issue 28): each hit says how faithful its graph is on
held-out documents, and ``min_ordinary_f1`` filters by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from n2g_mcp.server import create_server
from store.graph import HeldoutFidelity, HeldoutScores
from store.jsonl import write_store
from tests.client import ok
from tests.fakes import FakeLiveBackend
from tests.graphs import fidelity, make_graph, scores

pytestmark = pytest.mark.anyio


def _scored(neuron: int, ordinary: float | None):
    graph = make_graph([((" dog",), 0.9)], neuron=neuron, f1=0.8)
    if ordinary is not None:
        held = HeldoutFidelity(n2g=HeldoutScores(tokens=scores(ordinary), interval=scores(ordinary)),
                               floor=HeldoutScores(tokens=scores(0.1), interval=scores(0.1)))
        graph.fidelity = fidelity(0.8).model_copy(update={"heldout": held})
    return graph


@pytest.fixture
def server(tmp_path: Path):
    directory = tmp_path / "stores"
    directory.mkdir()
    write_store(directory / "test-model.jsonl.gz", "test-model",
                [_scored(0, 0.7), _scored(1, 0.2), _scored(2, None)])
    fake = FakeLiveBackend()
    return create_server(directory, live=fake, models=fake.served())


async def test_hits_carry_their_ordinary_text_figures(server) -> None:
    data = await ok(server, "search_graphs", activating=[" dog"])
    by = {h["neuron"]: h for h in data["results"]}
    assert by[0]["ordinary_f1"] == pytest.approx(0.7) and by[1]["ordinary_f1"] == pytest.approx(0.2)
    assert by[2]["ordinary_f1"] is None and by[2]["ordinary_r"] is None


async def test_min_ordinary_f1_keeps_only_graphs_scored_that_well(server) -> None:
    data = await ok(server, "search_graphs", activating=[" dog"], min_ordinary_f1=0.5)
    assert [h["neuron"] for h in data["results"]] == [0] and data["total"] == 1
    listing = await ok(server, "search_graphs", min_ordinary_f1=0.1)
    assert sorted(h["neuron"] for h in listing["results"]) == [0, 1] and listing["total"] == 2
