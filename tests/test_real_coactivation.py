"""Co-activation on SmolLM2-135M's shipped scan and on the model: L1/N404's behavioural twins.

L1/N404 fires on the second piece of a split word (' pub(c' [[rate]], 'M' [[ica]]); its graph's
token sets overlap no other graph's by more than 0.17 at the paper's measure, while neurons of
layers 1-3 fire on the same tokens (issue 28: find_similar_neurons missed a twin that
find_neurons found). Both co-activation measures must find them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from n2g_mcp.queries import Queries
from store.coactivation import by_scan
from store.scanfile import ScanFile, scan_filename

REPO_STORES = Path(__file__).resolve().parents[1] / "stores"
MODEL = "smollm2-135m"
TARGET = (1, 404)
TWINS = {(2, 510), (3, 468), (1, 1006)}
"""Measured on the model (correlation over its top and random windows, every layer): r 0.77, 0.75
and 0.75, the three highest; each holds 23-28 of its 50 top windows peaking at the same token."""


def test_the_shipped_scan_ranks_l1_n404s_twins_first():
    scan = ScanFile(REPO_STORES / scan_filename(MODEL))
    ranked = by_scan(scan, TARGET, range(scan.n_layers), limit=10)
    print([(n.id, n.shared_tokens, n.shared_windows) for n in ranked])
    assert {(n.layer, n.neuron) for n in ranked[:3]} == TWINS
    assert all(n.shared_tokens >= 20 for n in ranked[:3])


@pytest.mark.model
def test_the_model_correlates_l1_n404_with_its_twins(tmp_path: Path):
    shutil.copy(REPO_STORES / scan_filename(MODEL), tmp_path)
    # Layers 1-2 only: the passes stop inside layer 2 (seconds on a CPU).
    out = Queries(tmp_path).coactivated(MODEL, *TARGET, layers=[1, 2], limit=5)
    print(out.model_dump_json(indent=1))
    assert out.source == "model" and out.tokens == (out.top_windows + out.random_windows) * 64
    assert out.top_windows + out.heldout_left_out == 50 and out.random_windows == out.top_windows
    found = {(h.layer, h.neuron): h for h in out.results}
    assert {(2, 510), (1, 1006)} <= set(found)
    assert all(found[t].correlation > 0.6 and found[t].shared_tokens >= 20 for t in [(2, 510), (1, 1006)])
