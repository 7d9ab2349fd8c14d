"""Shared fixtures: a small store of test-model graphs in tmp_path, and anyio on asyncio."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.jsonl import write_store
from tests.fakes import FakeLiveBackend
from tests.graphs import make_graph

EVERYONE = [((" except", " everyone"), 0.9), ((" except", None, " everyone"), 0.8), ((" but", " everyone"), 0.6)]
"""The paper's Figure 1 neuron: fires on ' except' after ' everyone'."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def small_store_graphs() -> list:
    """Five graphs of test-model: a fake-built one with examples, two near-duplicates, an
    in-context (repeated-token) neuron and one with no fidelity."""
    return [
        FakeLiveBackend().graph("test-model", 0, 1),
        make_graph(EVERYONE, layer=0, neuron=2, f1=0.8),
        make_graph(EVERYONE, layer=0, neuron=3, f1=0.7),
        make_graph([((" Potter", " Harry", None, " Potter"), 0.95), ((" Harry",), 0.4)], layer=1, neuron=4, f1=0.6),
        make_graph([((" the",), 0.7)], layer=1, neuron=5),
    ]


@pytest.fixture
def stores_dir(tmp_path: Path) -> Path:
    """A stores directory holding ``test-model.jsonl.gz`` (five graphs, see above)."""
    directory = tmp_path / "stores"
    directory.mkdir()
    write_store(directory / "test-model.jsonl.gz", "test-model", small_store_graphs())
    return directory
