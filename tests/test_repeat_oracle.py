"""The induction oracle's in-context neuron, built by the real builder, says "repeat".

``tests/induction_oracle.py``: layer 1's ``INDUCT`` fires on any token that already appeared in
the text; layer 0's ``EVEN`` on even-numbered words wherever they stand. Built from a corpus of
random words, the first must come back as the repeat wildcard and predict the probe's fresh
repeated sequences; the second must get no repeat node.
"""

from __future__ import annotations

import numpy as np
import pytest

from builder.config import BuildConfig, EvalConfig, ScanConfig
from builder.forward import run_layers
from builder.probes.induction import repeated_sequences
from builder.run.runner import BuildSource, run_build
from builder.stages.evaluate import Window, ngram_lookup
from store.metrics import score
from store.trie import REPEAT
from tests.induction_oracle import EVEN, INDUCT, INDUCT_LAYER, WORDS, induction_model

CONFIG = BuildConfig(scan=ScanConfig(window=16, top_k=30, random_windows=10),
                     eval=EvalConfig(top=20, train=10, extra_train=10), neuron_batch=2)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory):
    """The oracle and its two neurons' graphs, built from a corpus of random words (a window
    repeats a word now and then, by chance)."""
    root = tmp_path_factory.mktemp("repeat-oracle")
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, size=160)) for _ in range(30)))
    model = induction_model()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("N2G_CACHE", str(root / "cache"))
        source = BuildSource(model, CONFIG, corpus=corpus)
        yield model, {(layer, neuron): run_build(model, [layer], [neuron], None, CONFIG, source)[0]
                      for layer, neuron in ((INDUCT_LAYER, INDUCT), (0, EVEN))}


def test_the_induction_neuron_comes_back_as_the_repeat_wildcard(graphs) -> None:
    _, built = graphs
    graph = built[(INDUCT_LAYER, INDUCT)]
    graph.graph._check()
    assert list(graph.graph) == [(REPEAT,)]
    assert graph.fidelity.n2g.random.f1 == pytest.approx(1.0)


def test_its_graph_predicts_fresh_repeated_sequences_where_a_token_lookup_cannot(graphs) -> None:
    model, built = graphs
    graph = built[(INDUCT_LAYER, INDUCT)]
    rows = repeated_sequences(model, 6, 12, seed=99)
    truth = run_layers(model, rows.tolist(), [INDUCT_LAYER])[INDUCT_LAYER][..., INDUCT].numpy()
    texts = [[model.vocab[t] for t in row] for row in rows]
    graph_f1 = score(truth.ravel(), np.concatenate([graph.predict(t) for t in texts])).f1
    # A lookup of its own activating tokens: the pivots of its stored train windows.
    train = []
    for example in (e for e in graph.examples if e.split == "train"):
        acts = np.zeros(len(example.tokens))
        acts[example.pivot] = 1.0
        train.append(Window(example.tokens, acts))
    lookup = ngram_lookup(train, 1)
    lookup_f1 = score(truth.ravel(), np.concatenate([lookup(t) for t in texts])).f1
    assert graph_f1 == pytest.approx(1.0)
    assert lookup_f1 < 0.5


def test_a_token_neuron_gets_no_repeat_node(graphs) -> None:
    _, built = graphs
    graph = built[(0, EVEN)]
    assert graph.graph and all(REPEAT not in path for path in graph.graph)
