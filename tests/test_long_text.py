"""Long texts run in windows: exact up to the window, bounded in memory beyond it.

The rule model of ``tests/oracle.py`` stands in for the transformer: its EXCEPT neuron looks back
3 tokens, TOKEN none, REPEAT the whole text, so what a window lets each neuron see is known.
"""

from __future__ import annotations

import numpy as np
import pytest

from builder.forward import _spans, long_activations, neuron_activations
from tests.oracle import EXCEPT, REPEAT, TOKEN, WORDS, rule_model

NEURONS = [EXCEPT, REPEAT, TOKEN]


def text_ids(model, n_tokens: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    words = [w for w in WORDS if w.startswith(" ")]
    return model.encode("".join(rng.choice(words, size=n_tokens)))


def one_pass(model, ids: list[int], neurons: list[int]) -> np.ndarray:
    """The single-pass activations, ``(len(ids), len(neurons))``."""
    rows = neuron_activations(model, 0, [ids] * len(neurons), neurons, max_batch_tokens=10**9)
    return np.stack(rows, axis=1)


def test_windows_tile_the_text_and_each_later_one_starts_with_the_overlap() -> None:
    spans = _spans(1000, 64, 16)
    assert spans[0] == (0, 0, 64) and spans[-1][2] == 1000
    for (_, _, end), (context, start, _) in zip(spans, spans[1:]):
        assert start == end and start - context == 16


def test_a_text_within_the_window_gets_exactly_the_single_pass_activations() -> None:
    model = rule_model()
    ids = text_ids(model, 200)
    assert np.array_equal(long_activations(model, 0, ids, NEURONS, window=256, overlap=64),
                          one_pass(model, ids, NEURONS))


def test_neurons_that_look_back_less_than_the_overlap_stay_exact_on_a_long_text() -> None:
    model = rule_model()
    ids = text_ids(model, 3000)
    windowed = long_activations(model, 0, ids, [EXCEPT, TOKEN], window=64, overlap=8)
    truth = one_pass(model, ids, [EXCEPT, TOKEN])
    assert truth[:, 0].sum() > 0 and np.array_equal(windowed, truth)


def test_beyond_the_window_a_position_sees_only_its_window() -> None:
    model = rule_model()
    ids = model.encode(" cat" + "".join(WORDS[3:13]) + " cat")  # " cat" again 11 tokens later
    windowed = long_activations(model, 0, ids, [REPEAT], window=8, overlap=2)[:, 0]
    assert one_pass(model, ids, [REPEAT])[-1, 0] == 1.0 and windowed[-1] == 0.0


def test_passes_stay_bounded_whatever_the_length(monkeypatch) -> None:
    model = rule_model()
    shapes: list[tuple[int, int]] = []
    run = model.bridge.run_with_hooks

    def recording(ids, *args, **kwargs):
        shapes.append(tuple(ids.shape))
        return run(ids, *args, **kwargs)

    monkeypatch.setattr(model.bridge, "run_with_hooks", recording)
    ids = text_ids(model, 20_000)
    acts = long_activations(model, 0, ids, [TOKEN], window=128, overlap=32, max_batch_tokens=1024)
    assert acts.shape == (20_000, 1)
    assert max(pos for _, pos in shapes) <= 128 + 1  # the window and its BOS token
    assert max(batch * pos for batch, pos in shapes) <= 1024 + 8  # the budget, plus BOS per row


@pytest.mark.parametrize("window, overlap", [(8, 8), (8, -1)])
def test_an_overlap_outside_the_window_is_refused(window, overlap) -> None:
    with pytest.raises(ValueError, match="overlap"):
        _spans(100, window, overlap)


@pytest.mark.model
def test_the_live_model_reads_the_longest_allowed_text_and_matches_one_pass_in_the_first_window() -> None:
    from builder.forward import LONG_WINDOW
    from builder.models import load_model
    from builder.run.live import LiveModels

    model = load_model("smollm2-135m", device="cpu")
    live = LiveModels()
    spec = live.add(model)
    text = "\N{GRINNING FACE}" * 20_000  # about 60k tokens: one pass would ask for 14.4 GB
    tokens, acts = live.activations(spec, 0, 7, text)
    assert len(acts) == len(tokens) > 3 * LONG_WINDOW and np.all(np.isfinite(acts))
    head = model.encode(text)[:LONG_WINDOW]
    (single,) = neuron_activations(model, 0, [head], [7])
    assert np.allclose(acts[:LONG_WINDOW], single, atol=1e-4)
