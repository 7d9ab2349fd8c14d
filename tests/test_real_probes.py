"""The whole-model tools on the real default model (SmolLM2-135M) and its shipped scan file.

Each claim is checked against the model itself: the scan's top window still peaks where the file
says, find_neurons reports what the neuron computes at that token, the induction probe's best
candidates of layers 14-23 matter for copying more than random neurons of the same layers,
steering with them silenced moves the predictions on a repeat and repeats exactly, and a
claim built from a neuron's own top token covers part of its top windows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from n2g_mcp.queries import Queries
from store.scanfile import ScanFile, scan_filename

pytestmark = pytest.mark.model

REPO_STORES = Path(__file__).resolve().parents[1] / "stores"
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Queries:
    """The query library over a stores directory holding only the shipped scan file."""
    stores = tmp_path_factory.mktemp("stores")
    shutil.copy(REPO_STORES / scan_filename(MODEL), stores)
    return Queries(stores)


def test_top_activations_of_a_deep_neuron_without_a_graph_match_the_model(queries: Queries):
    out = queries.top_activations(MODEL, 19, 5, limit=2)
    assert out.source == "scan" and out.stats is not None and 0 < out.stats.density < 1
    scan = ScanFile(REPO_STORES / scan_filename(MODEL))
    best = scan.top(19, 5, limit=1)[0]
    ids = scan.windows[best.window].tolist()
    hits = queries.live.neurons_at(queries.models.spec(MODEL), ids, best.pivot, [19],
                                   {19: scan.max_activation[19]}, limit=scan.d_mlp)
    again = next(h for h in hits if h.neuron == 5)
    assert again.raw_activation == pytest.approx(best.activation, rel=0.01)  # float16 in the file


def test_find_neurons_reports_what_the_neuron_computes_at_the_token(queries: Queries):
    text = "import numpy as np\nfrom collections import"
    out = queries.find_neurons(MODEL, text, layers=[3, 12], limit=5)
    assert out.token == " import" and out.position == out.tokens - 1
    top = out.results[0]
    _, raw = queries.live.activations(queries.models.spec(MODEL), top.layer, top.neuron, text)
    assert raw[-1] == pytest.approx(top.raw_activation, rel=1e-3, abs=1e-4)
    assert [r.activation for r in out.results] == sorted((r.activation for r in out.results), reverse=True)


def test_induction_candidates_of_the_middle_layers_matter_for_copying(queries: Queries):
    probe = queries.find_induction(MODEL, list(range(14, 24)), limit=20, runs=1)
    # The standard protocol puts SmolLM2 in a strong-copy regime (14 nats -> about 2.4).
    assert probe.loss_first_copy > 12 and probe.loss_second_copy < 4
    assert probe.results[0].score > 0.5 and all(14 <= r.layer <= 23 for r in probe.results)
    again = queries.find_induction(MODEL, list(range(14, 24)), limit=20, runs=1)
    assert [r.id for r in again.results] == [r.id for r in probe.results]
    ablation = queries.ablate(MODEL, [r.id for r in probe.results], seed=10)  # fresh sequences
    assert ablation.loss_first_copy is not None and ablation.loss_first_copy > 12
    assert ablation.delta > 0.1
    assert ablation.delta > 5 * abs(ablation.control_delta) and ablation.rank_among_controls == 1


def test_steering_the_copying_neurons_moves_a_repeat_and_repeats_exactly(queries: Queries):
    ids = [r.id for r in queries.find_induction(MODEL, list(range(14, 24)), limit=20, runs=1).results]
    prompt = "lamp violin desert cobalt ferry mango quartz tulip. lamp violin desert"
    silenced = queries.steer(MODEL, ids, prompt, scale=0.0, max_new_tokens=4)
    assert silenced.clean_text.startswith(" cobalt ferry")  # intact, the model continues the copy
    assert silenced.changes[0].kl > 0.05
    assert queries.steer(MODEL, ids, prompt, scale=0.0, max_new_tokens=4) == silenced
    boosted = queries.steer(MODEL, ids, prompt, scale=2.0, max_new_tokens=4)
    assert boosted.clean_text == silenced.clean_text and boosted.steered_text != boosted.clean_text


def test_a_claim_from_the_neurons_top_token_covers_its_top_windows(queries: Queries):
    top = queries.top_activations(MODEL, 19, 5, limit=1).examples[0]
    out = queries.hypothesis(MODEL, 19, 5, top.pivot_token, kind="tokens")
    top_set = next(s for s in out.sets if s.set == "top")
    assert top_set.figures.recall is not None and top_set.figures.recall > 0
    assert out.corpus_windows_matched > 0
