"""Steering on the induction oracle, whose unembedding reads one neuron: clamping that neuron
changes what the model writes, clamping any other changes nothing, and the clean continuation is
exactly an unhooked greedy generation."""

from __future__ import annotations

import threading

import pytest
import torch

from builder.probes.steer import steer
from store.errors import BadArgument, Cancelled
from tests.induction_oracle import INDUCT, INDUCT_LAYER, induction_model

PROMPT = "aaa abb aac aaa"
"""A prompt whose last word repeats its first: the oracle copies from there (" abb aac aaa ...")."""


def greedy(model, ids: list[int], steps: int) -> list[int]:
    """A plain greedy loop over the unhooked model: BOS, the text, the argmax appended, until a
    special token."""
    out = list(ids)
    for _ in range(steps):
        logits = model.bridge(torch.tensor([[model.bos_id, *out]]))  # (1, 1 + pos, vocab)
        nxt = int(logits[0, -1].argmax())
        if nxt in model.special_ids:
            break
        out.append(nxt)
    return out[len(ids):]


def test_the_clean_continuation_is_an_unhooked_greedy_generation():
    model = induction_model()
    ids = model.encode(PROMPT)
    result = steer(model, [(INDUCT_LAYER, 0)], [0.0], ids, max_new_tokens=6)
    expected = greedy(model, ids, 6)
    assert [model.vocab[i] for i in expected] == result.clean_tokens
    assert result.clean_text == " abb aac aaa abb aac aaa"


def test_clamping_the_neuron_the_unembedding_reads_changes_the_text():
    model = induction_model()
    result = steer(model, [(INDUCT_LAYER, INDUCT)], [0.0], model.encode(PROMPT), max_new_tokens=6)
    assert result.clean_text == " abb aac aaa abb aac aaa"
    assert result.steered_text == ""  # silenced, the oracle predicts nothing: end of text at once
    top = result.changes[0]
    assert (top.position, top.token, top.clean_next) == (3, " aaa", " abb")
    assert top.clean_prob > 0.99 and top.kl > 5


def test_clamping_a_neuron_nothing_reads_changes_nothing():
    model = induction_model()
    result = steer(model, [(INDUCT_LAYER, 0), (0, 2)], [5.0, 5.0], model.encode(PROMPT), max_new_tokens=6)
    assert result.steered_text == result.clean_text
    assert all(c.kl < 1e-6 for c in result.changes)
    assert result.values == [5.0, 5.0]


def test_steering_is_deterministic():
    model = induction_model()
    ids = model.encode(PROMPT)
    assert steer(model, [(INDUCT_LAYER, INDUCT)], [0.0], ids, 4) == steer(model, [(INDUCT_LAYER, INDUCT)], [0.0], ids, 4)


def test_steering_reports_progress_and_stops_when_cancelled():
    model = induction_model()
    seen: list[float] = []
    steer(model, [(INDUCT_LAYER, 0)], [0.0], model.encode(PROMPT), 3, progress=lambda d, t, m: seen.append(d))
    assert seen == [1, 2, 3]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        steer(model, [(INDUCT_LAYER, INDUCT)], [0.0], model.encode(PROMPT), 3, cancel=cancel)


@pytest.mark.parametrize("neurons, prompt, words", [([], PROMPT, "no neurons"), ([(1, 3)], "", "no tokens"),
                                                    ([(2, 3)], PROMPT, "out of range")])
def test_bad_requests_are_explained(neurons, prompt, words):
    model = induction_model()
    with pytest.raises(BadArgument, match=words):
        steer(model, neurons, [0.0] * len(neurons), model.encode(prompt), 3)
