"""The fit's calibration and the train/test split, on hand-made texts (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from builder.config import EvalConfig, FitConfig
from builder.stages.examples import split
from builder.stages.fit import FitSnippet, TrainText, fit
from store.trie import REPEAT

UNCALIBRATED = FitConfig(calibrate=False, backoff=False, token_paths=False)


def _text(spec: str) -> TrainText:
    """'a b c*' -> tokens ' a', ' b', ' c' with the starred ones firing (1.0), the rest 0."""
    words = spec.split()
    return TrainText([" " + w.rstrip("*") for w in words],
                     np.array([1.0 if w.endswith("*") else 0.0 for w in words]))


# " b" fires after " a", never elsewhere.
TRAIN = [_text("x a b* y b z"), _text("a b* b x"), _text("y y b x a b*")]
SNIPPET = FitSnippet([" a", " b"], np.array([0.9, 1.0]), 1.0)  # saliency marks " a" important
B_ALONE = FitSnippet([" b"], np.array([1.0]), 1.0)


def test_test_half_is_the_papers_whatever_the_extra_train_windows() -> None:
    paper_train, paper_test = split(20, EvalConfig(extra_train=0), 0, 4, 11)
    train, test = split(50, EvalConfig(), 0, 4, 11)
    assert (test == paper_test).all()
    assert set(train) == set(paper_train) | set(range(20, 50))
    assert not set(train) & set(test)


def test_calibration_lowers_a_path_whose_matches_do_not_fire() -> None:
    # A context-free snippet path for " b", which fires on 3 of its 10 train matches.
    train = [*TRAIN, _text("b b b x b")]
    trie = fit([B_ALONE], FitConfig(backoff=False, token_paths=False, firing_share=0.5), train)
    assert trie[(" b",)] < 0.5
    assert fit([B_ALONE], UNCALIBRATED, train)[(" b",)] == 1.0


def test_backoff_keeps_context_where_the_token_alone_does_not_fire() -> None:
    trie = fit([SNIPPET], FitConfig(token_paths=False), TRAIN)
    assert set(trie) == {(" b", " a")}
    assert trie[(" b", " a")] == pytest.approx(1.0)


def test_backoff_keeps_the_token_alone_where_it_fires_without_the_context() -> None:
    train = [*TRAIN, _text("x b* y b*"), _text("b* z")]
    trie = fit([SNIPPET], FitConfig(token_paths=False), train)
    assert (" b",) in set(trie) and trie[(" b",)] >= 0.5


def test_a_token_that_fires_in_train_text_gets_a_path_without_an_example() -> None:
    train = [*TRAIN, _text("c* x c* y")]
    trie = fit([SNIPPET], FitConfig(), train, firing_tokens=[" c"])
    assert trie[(" c",)] == pytest.approx(1.0)
    without = fit([SNIPPET], FitConfig(token_paths=False), train, firing_tokens=[" c"])
    assert (" c",) not in set(without)


def test_a_probed_token_no_train_text_holds_keeps_its_probe_value() -> None:
    trie = fit([SNIPPET], FitConfig(), TRAIN, probed=[(" q", 0.7)])
    assert trie[(" q",)] == pytest.approx(0.7)


def test_a_probed_token_the_train_text_contradicts_is_dropped() -> None:
    # " y" is probed as firing alone, but never fires in the train text.
    trie = fit([SNIPPET], FitConfig(), TRAIN, probed=[(" y", 0.7)])
    assert (" y",) not in set(trie)


def _bigram_texts(n: int, seed: int) -> list[TrainText]:
    """Random windows (some holding a copied stretch) where the neuron fires on the second token
    of every bigram that occurred earlier in the window, and nowhere else."""
    rng = np.random.default_rng(seed)
    words = [f" w{i}" for i in range(40)]
    out = []
    for k in range(n):
        tokens = list(rng.choice(words, size=24))
        if k % 2 == 0:  # a copied stretch, as in the top windows of an induction-like neuron
            start = int(rng.integers(0, 8))
            tokens[14:22] = tokens[start:start + 8]
        fires = [any(tokens[j - 1:j + 1] == tokens[i - 1:i + 1] for j in range(1, i)) for i in range(24)]
        out.append(TrainText(tokens, np.array(fires, dtype=float)))
    return out


def _bigram_snippets(train: list[TrainText]) -> list[FitSnippet]:
    """The snippets' own literal paths, as saliency would make them: the token before the pivot."""
    return [FitSnippet(list(t.tokens[i - 1:i + 1]), np.array([1.0, 1.0]), 1.0)
            for t in train[:10:2] for i in np.flatnonzero(t.activations)[:1]]


def test_a_neuron_that_fires_on_repeated_bigrams_gets_one_repeat_path() -> None:
    train = _bigram_texts(40, seed=0)
    snippets = _bigram_snippets(train)
    trie = fit(snippets, FitConfig(), train,
               sorted({w for t in train for w, a in zip(t.tokens, t.activations) if a >= 0.5}))
    assert list(trie) == [(REPEAT, REPEAT)]
    assert trie[(REPEAT, REPEAT)] == pytest.approx(1.0)
    trie._check()


def test_without_repeat_candidates_the_same_neuron_keeps_literal_paths() -> None:
    train = _bigram_texts(40, seed=0)
    trie = fit(_bigram_snippets(train), FitConfig(repeats=False), train)
    assert trie and all(REPEAT not in path for path in trie)


def test_a_token_neuron_in_repetitive_text_gets_no_repeat_path() -> None:
    # " w3" fires wherever it stands; the texts repeat as much as the bigram neuron's do.
    train = [TrainText(t.tokens, np.array([float(w == " w3") for w in t.tokens])) for t in _bigram_texts(40, 1)]
    trie = fit([FitSnippet([" w3"], np.array([1.0]), 1.0)], FitConfig(), train, [" w3"])
    assert list(trie) == [(" w3",)]
