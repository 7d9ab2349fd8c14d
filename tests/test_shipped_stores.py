"""The shipped stores of ``stores/``, read as the server reads them, without the model: every
layer of each model holds graphs (every neuron, once, for the default model; every layer of a
dictionary's latents, store format 3), each store names the scan file beside it, and a graph's
examples (references into that scan, store format 2) come back as text."""

from __future__ import annotations

import gzip
import re
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
NEURON_STORES = sorted({read_header(path).model: path for path in SHIPPED if read_header(path).units is None}.values())
"""A store of each model's neurons: what the output-token files describe (a dictionary's latents have
none yet)."""
LEAST_PER_LAYER = 64
"""The fewest graphs a layer of a shipped model holds (issue 16: >= 64 seeded neurons a layer)."""


def test_two_model_families_ship() -> None:
    assert {read_header(path).model for path in SHIPPED} >= {"smollm2-135m", "gemma3-270m"}


def _lines(path: Path) -> tuple[bytes, list[bytes]]:
    with gzip.open(path, "rb") as lines:
        head, *graphs = lines
    return head, graphs


def _parts(key: str) -> list[Path]:
    return [path for path in SHIPPED if read_header(path).key == key]


@pytest.mark.parametrize("key", sorted({read_header(path).key for path in SHIPPED}))
def test_a_shipped_model_covers_every_layer(key: str) -> None:
    """A model's stores together (a calibrated atlas ships in parts, ``<model>.ordinary-L<a>-<b>``,
    over the fitted one) hold every layer; the default model every neuron; each part its layers."""
    per_layer: Counter[int] = Counter()
    neurons: set[tuple[int, int]] = set()
    header = read_header(_parts(key)[0])
    scan = ScanFile(REPO_STORES / header.scan.name)
    for path in _parts(key):
        layers = {orjson.loads(line)["layer"] for line in _lines(path)[1]}
        if (named := re.search(r"-L(\d+)-(\d+)\.jsonl\.gz$", path.name)) is not None:
            assert layers <= set(range(int(named[1]), int(named[2]) + 1)), path.name
        for line in _lines(path)[1]:
            graph = orjson.loads(line)
            if (graph["layer"], graph["neuron"]) not in neurons:
                per_layer[graph["layer"]] += 1
                neurons.add((graph["layer"], graph["neuron"]))
    # A dictionary's stores cover the layers it has (its scan names them), a neuron store every layer.
    assert sorted(per_layer) == scan.meta.get("layers", list(range(header.n_layers)))
    assert min(per_layer.values()) >= LEAST_PER_LAYER, per_layer
    if key == DEFAULT_MODEL:  # the atlas (issue 15): every neuron of the default model
        assert len(neurons) == header.n_layers * header.shape[1], per_layer


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_store_resolves_its_examples(path: Path, tmp_path: Path) -> None:
    header = read_header(path)
    assert header.scan is not None and header.shape is not None
    scan = ScanFile(REPO_STORES / header.scan.name)
    assert scan.meta["windows_key"] == header.scan.windows_key and scan.key == header.key
    head, graphs = _lines(path)
    firsts: dict[int, bytes] = {}  # each layer's first line
    for line in graphs:
        firsts.setdefault(orjson.loads(line)["layer"], line)
    assert len({(g["layer"], g["neuron"]) for g in map(orjson.loads, graphs)}) == len(graphs), "a neuron twice"
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
