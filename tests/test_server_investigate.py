"""The demo's scripted investigation (``python -m n2g_mcp.demo``) through a real stdio client."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from n2g_mcp.demo import investigate

pytestmark = pytest.mark.anyio


async def run_fake(stores_dir: Path, layer: int, neuron: int | None, out_dir: Path) -> tuple[int, str]:
    """The investigation against the n2g-mcp command over the fake live model (tests/fake_server.py)."""
    out = io.StringIO()
    command = [sys.executable, "-m", "tests.fake_server", "--stores", str(stores_dir)]
    status = await investigate(None, layer, neuron, out_dir, out=out, command=command)
    return status, out.getvalue()


async def test_investigation_searches_builds_tests_compares_and_draws(stores_dir: Path, tmp_path: Path):
    status, out = await run_fake(stores_dir, 2, 9, tmp_path / "out")
    assert status == 0, out
    for step in ("-> list_models()", "-> search_graphs(repeated=True, layer=2", "-> build_graph(layer=2, neuron=9)",
                 "Built L2/N9 of test-model", "compare=True", "Agreement: precision",
                 "-> find_similar_neurons(layer=2, neuron=9", "== Findings"):
        assert step in out, step
    assert "pruned example: real peak 1.00, fires (as expected)" in out
    assert "activating token alone: real peak 0.25, silent (as expected)" in out
    assert "unrelated control text: real peak 0.00, silent (as expected)" in out
    assert (tmp_path / "out" / "L2_N9.dot").read_text().startswith("// N2G neuron graph L2/N9")
    # it ends with the built neuron's page in the viewer (a stdio server links to `n2g-mcp view`'s address)
    assert "  http://127.0.0.1:8000/m/test-model/L2/N9" in out.split("See the neurons in a browser")[1]


async def test_investigation_chooses_a_neuron_by_search_when_none_is_given(stores_dir: Path, tmp_path: Path):
    status, out = await run_fake(stores_dir, 1, None, tmp_path)
    assert status == 0, out
    assert "Chose the top search hit L1/N4." in out


async def test_investigation_stops_with_a_clear_message_when_a_step_fails(stores_dir: Path, tmp_path: Path):
    status, out = await run_fake(stores_dir, 7, 0, tmp_path)
    assert status == 1
    assert "Investigation stopped: build_graph failed" in out
    assert "layer 7 is out of range: test-model has layers 0-3" in out


@pytest.mark.model
def test_investigation_runs_against_the_real_default_model(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "n2g_mcp.demo", "--workflow", "neuron",
                           "--stores", str(tmp_path / "stores"), "--layer", "0", "--neuron", "5",
                           "--out", str(tmp_path)],
                          env=dict(os.environ), capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Built L0/N5 of smollm2-135m" in done.stdout and "Agreement: precision" in done.stdout


async def test_the_induction_investigation_finds_the_planted_neuron_and_its_causal_effect(tmp_path: Path):
    """The demo's workflow against the real live layer over the induction oracle (a subprocess)."""
    out = io.StringIO()
    command = [sys.executable, "-m", "tests.oracle_server", "--stores", str(tmp_path / "stores")]
    status = await investigate(None, 0, None, tmp_path, out=out, command=command, workflow="induction",
                               sequences=6, length=16)
    text = out.getvalue()
    assert status == 0, text
    for step in ("-> find_induction_neurons(", "-> top_activations(layer=1, neuron=3", "-> build_graph(layer=1, neuron=3)",
                 "-> predict_activations(layer=1, neuron=3", "-> ablate_neurons(neurons=['L1/N3'], each=True)",
                 "-> steer_neurons(neurons=['L1/N3'], ", "-> test_hypothesis(", "-> find_neurons(", "== Findings"):
        assert step in text, step
    assert "best L1/N3 " in text
    assert "raises the copy loss more than the control" in text
    assert "alone, the largest: L1/N3 +" in text and "the model copies at the probe's settings" in text


async def test_investigation_says_so_when_the_server_cannot_start(tmp_path: Path):
    out = io.StringIO()
    status = await investigate(None, 0, None, tmp_path, out=out,
                               command=[sys.executable, "-c", "raise SystemExit('broken server')"])
    assert status == 1
    assert "The server could not be started or stopped answering" in out.getvalue()
