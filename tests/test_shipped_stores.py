"""The shipped stores of ``stores/``, read as the server reads them, without the model: every
layer of each model holds graphs (every neuron, once, for the default model; every layer of a
dictionary's latents, store format 3), each store names the scan file beside it, and a graph's
examples (references into that scan, store format 2) come back as text."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import orjson
import pytest

from n2g_mcp.queries import Queries
from store.jsonl import read_header
from store.logitfile import LogitFile, logits_filename
from store.models import DEFAULT_MODEL
from store.scanfile import ScanFile

REPO_STORES = Path(__file__).resolve().parents[1] / "stores"
SHIPPED = sorted(REPO_STORES.glob("*.jsonl.gz"))
NEURON_STORES = [path for path in SHIPPED if read_header(path).units is None]
"""The stores of neurons: what the output-token files describe (a dictionary's latents have none yet)."""
LEAST_PER_LAYER = 64
"""The fewest graphs a layer of a shipped model holds (issue 16: >= 64 seeded neurons a layer)."""


def test_two_model_families_ship() -> None:
    assert {read_header(path).model for path in SHIPPED} >= {"smollm2-135m", "gemma3-270m"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_store_covers_every_layer_and_resolves_its_examples(path: Path, tmp_path: Path) -> None:
    header = read_header(path)
    assert header.scan is not None and header.shape is not None
    scan = ScanFile(REPO_STORES / header.scan.name)
    assert scan.meta["windows_key"] == header.scan.windows_key and scan.key == header.key
    with gzip.open(path, "rb") as lines:
        head, *graphs = lines
    per_layer: Counter[int] = Counter()
    neurons: set[tuple[int, int]] = set()
    firsts: dict[int, bytes] = {}  # each layer's first line
    for line in graphs:
        graph = orjson.loads(line)
        layer = graph["layer"]
        per_layer[layer] += 1
        neurons.add((layer, graph["neuron"]))
        firsts.setdefault(layer, line)
    # A dictionary's store covers the layers it has (its scan names them), a neuron store every layer.
    assert sorted(per_layer) == scan.meta.get("layers", list(range(header.n_layers)))
    assert min(per_layer.values()) >= LEAST_PER_LAYER, per_layer
    assert len(neurons) == len(graphs), "a neuron is stored twice"
    if header.key == DEFAULT_MODEL:  # the atlas (issue 15): every neuron of the default model
        assert len(neurons) == header.n_layers * header.shape[1], per_layer
    # The server over the store's first graph of each layer and the scan file it refers into.
    (tmp_path / path.name).write_bytes(gzip.compress(head + b"".join(firsts.values())))
    (tmp_path / header.scan.name).symlink_to(REPO_STORES / header.scan.name)
    queries = Queries(tmp_path)
    for layer, line in firsts.items():
        neuron = orjson.loads(line)["neuron"]
        graph = queries.get_graph(header.key, layer, neuron)
        assert not graph.warnings and graph.examples, graph.id
        assert all("[[" in example.text for example in graph.examples), graph.id
        tops = queries.top_activations(header.key, layer, neuron, limit=2)
        assert tops.examples and "[[" in tops.examples[0].text


@pytest.mark.parametrize("path", NEURON_STORES, ids=lambda p: p.name)
def test_a_shipped_model_says_what_every_neuron_writes(path: Path, tmp_path: Path) -> None:
    """Issue 31: each shipped model's output-token file covers all its neurons, under 10 MB, with the
    scan's vocabulary; the server finds neurons by a promoted token from it alone."""
    header = read_header(path)
    logits = REPO_STORES / logits_filename(header.model)
    f = LogitFile(logits)
    assert logits.stat().st_size < 10_000_000
    assert (f.model, f.shape, f.top_k) == (header.model, (header.n_layers, header.shape[1]), 10)
    assert f.vocab == ScanFile(REPO_STORES / header.scan.name).vocab
    values = f.values["promoted"].astype(float)
    assert (values[..., :-1] >= values[..., 1:]).all() and (f.values["suppressed"] <= 0).all()
    (tmp_path / logits.name).symlink_to(logits)
    found = Queries(tmp_path).find_by_output([" import"], model=header.model, limit=5)
    assert found.total > 0 and all(hit.matched[0].strip().lower() == "import" for hit in found.results)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_set_up_writes_each_shipped_stores_current_sidecar_index(path: Path) -> None:
    """Issue 27: a copy of the shipped stores, never seen by a server, answers from its first
    call: the set-up's `n2g index` writes each store's sidecar, indexing it as it is (sidecars are
    made, not committed: 42 MB that every rewrite of the store would add to the history again)."""
    from n2g_mcp.registry import ServedModels
    from store.sidecar import current_sidecar

    assert current_sidecar(path, ServedModels().shape) is not None, (
        f"{path.name} has no current sidecar index: run `make setup` (or `n2g index --stores stores`)")
