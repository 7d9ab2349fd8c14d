"""The fit's calibration and the train/test split, on hand-made texts (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from builder.build import split
from builder.config import EvalConfig, FitConfig
from builder.fit import TrainText, fit

UNCALIBRATED = FitConfig(calibrate=False, backoff=False, token_paths=False)


def _text(spec: str) -> TrainText:
    """'a b c*' -> tokens ' a', ' b', ' c' with the starred ones firing (1.0), the rest 0."""
    words = spec.split()
    return TrainText([" " + w.rstrip("*") for w in words],
                     np.array([1.0 if w.endswith("*") else 0.0 for w in words]))


# " b" fires after " a", never elsewhere.
TRAIN = [_text("x a b* y b z"), _text("a b* b x"), _text("y y b x a b*")]
SNIPPET = ([" a", " b"], np.array([0.9, 1.0]))  # saliency marks " a" important


def test_test_half_is_the_papers_whatever_the_extra_train_windows() -> None:
    paper_train, paper_test = split(20, EvalConfig(extra_train=0), 0, 4, 11)
    train, test = split(50, EvalConfig(), 0, 4, 11)
    assert (test == paper_test).all()
    assert set(train) == set(paper_train) | set(range(20, 50))
    assert not set(train) & set(test)


def test_calibration_lowers_a_path_whose_matches_do_not_fire() -> None:
    # A context-free snippet path for " b", which fires on 3 of its 10 train matches.
    train = [*TRAIN, _text("b b b x b")]
    trie = fit([[" b"]], [np.array([1.0])], [1.0], FitConfig(backoff=False, token_paths=False,
                                                             firing_share=0.5), train)
    assert trie[(" b",)] < 0.5
    assert fit([[" b"]], [np.array([1.0])], [1.0], UNCALIBRATED, train)[(" b",)] == 1.0


def test_backoff_keeps_context_where_the_token_alone_does_not_fire() -> None:
    trie = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(token_paths=False), TRAIN)
    assert set(trie) == {(" b", " a")}
    assert trie[(" b", " a")] == pytest.approx(1.0)


def test_backoff_keeps_the_token_alone_where_it_fires_without_the_context() -> None:
    train = [*TRAIN, _text("x b* y b*"), _text("b* z")]
    trie = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(token_paths=False), train)
    assert (" b",) in set(trie) and trie[(" b",)] >= 0.5


def test_a_token_that_fires_in_train_text_gets_a_path_without_an_example() -> None:
    train = [*TRAIN, _text("c* x c* y")]
    trie = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(), train, firing_tokens=[" c"])
    assert trie[(" c",)] == pytest.approx(1.0)
    without = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(token_paths=False), train,
                  firing_tokens=[" c"])
    assert (" c",) not in set(without)


def test_a_probed_token_no_train_text_holds_keeps_its_probe_value() -> None:
    trie = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(), TRAIN, probed=[(" q", 0.7)])
    assert trie[(" q",)] == pytest.approx(0.7)


def test_a_probed_token_the_train_text_contradicts_is_dropped() -> None:
    # " y" is probed as firing alone, but never fires in the train text.
    trie = fit([SNIPPET[0]], [SNIPPET[1]], [1.0], FitConfig(), TRAIN, probed=[(" y", 0.7)])
    assert (" y",) not in set(trie)
