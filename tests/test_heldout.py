"""The held-out split, the held-out evaluator and the corpus calibration (issue 28).

Oracle tests: the rule model of ``tests/oracle.py`` says exactly what each neuron does, so the
calibrated END of a path is known in advance; the split and the scores are checked on hand-made
documents and arrays.
"""

from __future__ import annotations

import gzip
import random

import numpy as np
import orjson
import pytest
import torch

from builder.stages.corpus_calibration import CalibrationConfig, Sample, calibrate
from builder.corpus import DEFAULT_CORPUS, heldout, heldout_mask, iter_documents, make_windows
from builder.stages.heldout import (
    CompiledGraph,
    LayerMeans,
    TokenClasses,
    layer_activations,
    mean_lookup,
    predict_windows,
    repeat_runs,
    score_windows,
)
from store.trie import IGNORE, REPEAT, NeuronTrie
from tests.oracle import EXCEPT, HALF, TOKEN, WORDS, rule_model, write_corpus


# --------------------------------------------------------------------------- the split
def _jsonl(path, sources: list[str], texts: list[str]):
    path.write_text("".join(orjson.dumps({"text": t, "source": s}).decode() + "\n"
                            for s, t in zip(sources, texts, strict=True)))
    return path


def test_the_embedded_corpus_holds_out_about_a_tenth_of_its_documents_of_every_kind() -> None:
    with gzip.open(DEFAULT_CORPUS, "rb") as f:
        records = [orjson.loads(line) for line in f]
    held = [r for r in records if heldout(r["source"])]
    assert len(held) == 40 and len(records) == 378
    share = sum(len(r["text"]) for r in held) / sum(len(r["text"]) for r in records)
    assert 0.08 <= share <= 0.12
    assert {r["kind"] for r in held} == {"prose", "code", "dialogue"}
    assert [h for h, _ in iter_documents()] == [heldout(r["source"]) for r in records]


def test_a_documents_side_depends_on_its_source_alone(tmp_path) -> None:
    sources = [f"pkg/file{i}.py#1" for i in range(200)]
    texts = [f"We saw the cat {i}." for i in range(200)]
    forward = [h for h, _ in iter_documents(_jsonl(tmp_path / "a.jsonl", sources, texts))]
    order = list(range(200))
    random.Random(0).shuffle(order)
    shuffled = _jsonl(tmp_path / "b.jsonl", [sources[i] for i in order], [texts[i] for i in order])
    backward = dict(zip(order, (h for h, _ in iter_documents(shuffled)), strict=True))
    assert forward == [backward[i] for i in range(200)]
    assert 5 <= sum(forward) <= 40  # about a tenth


def test_build_and_heldout_windows_partition_the_corpus_by_document(tmp_path) -> None:
    model = rule_model()
    rng = random.Random(1)
    filler = [w for w in WORDS if w.startswith(" ")]
    texts = ["We" + "".join(rng.choice(filler) for _ in range(rng.randint(20, 90))) for _ in range(150)]
    path = _jsonl(tmp_path / "c.jsonl", [f"doc{i}" for i in range(150)], texts)
    every = make_windows(model, path, 16)
    mask = heldout_mask(model, path, 16)
    build, held = make_windows(model, path, 16, part="build"), make_windows(model, path, 16, part="heldout")
    assert mask.shape == (len(every),) and 0 < mask.sum() < len(every)
    assert (every[~mask] == build).all() and (every[mask] == held).all()
    # Windows of a held-out document are held out, and only those.
    expected = np.concatenate([np.full(len(model.encode(t)) // 16, heldout(f"doc{i}"))
                               for i, t in enumerate(texts)])
    assert (mask == expected).all()


# --------------------------------------------------------------------------- the evaluator
def _random_trie(rng: random.Random, vocab: list[str]) -> NeuronTrie:
    trie = NeuronTrie()
    for _ in range(rng.randint(1, 8)):
        path = [rng.choice([*vocab, REPEAT]) if rng.random() < 0.2 else rng.choice(vocab)]
        for _ in range(rng.randint(0, 3)):
            path.append(rng.choice([*vocab, IGNORE, REPEAT]))
        while len(path) > 1 and path[-1] is IGNORE:
            path.pop()
        trie.insert(tuple(path), round(rng.random(), 3), [0.9] * (len(path) - 1))
    return trie


@pytest.mark.parametrize("rule, default", [("all", 0.0), ("specific", 0.05)])
@pytest.mark.parametrize("seed", range(20))
def test_vectorised_prediction_equals_the_tries_own(seed: int, rule: str, default: float) -> None:
    rng = random.Random(seed)
    vocab = [" a", " b", " c", " d", " e"]
    strings = [*vocab, " a"]  # two ids spell " a", as in SmolLM2's vocabulary
    classes = TokenClasses.of(strings)
    trie = _random_trie(rng, [*vocab, " z"])  # " z" is no token of the text's vocabulary
    ids = np.array([[rng.randrange(len(strings)) for _ in range(12)] for _ in range(6)])
    codes = classes.of_id[ids]
    compiled = CompiledGraph.of(trie, classes)
    runs = repeat_runs(codes, max(compiled.reach, 1))
    got = predict_windows(compiled, codes, runs, rule, default)
    expected = np.array([trie.predict([strings[i] for i in row], rule, default) for row in ids])
    assert np.allclose(got, expected)


def test_the_most_specific_rule_lets_a_context_lower_a_tokens_prediction() -> None:
    trie = NeuronTrie()
    trie.insert((" b",), 0.6)
    trie.insert((" b", " a"), 0.1, [0.9])
    classes = TokenClasses.of([" a", " b"])
    codes = np.array([[0, 1, 1]])  # a b b
    compiled = CompiledGraph.of(trie, classes)
    assert predict_windows(compiled, codes).tolist() == [[0.0, 0.6, 0.6]]
    assert predict_windows(compiled, codes, rule="specific").tolist() == [[0.0, 0.1, 0.6]]


def test_scores_on_hand_made_arrays() -> None:
    true = np.array([[0.9, 0.1, 0.7, 0.0], [0.6, 0.0, 0.0, 0.2]])
    pred = np.array([[0.8, 0.6, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    s = score_windows(true, pred)
    # Firing: 0.9, 0.7, 0.6 (3); predicted: 0.8, 0.6, 0.5, 0.5 (4); hits: 0.9 and 0.6 (2).
    assert (s.firing, s.predicted) == (3, 4)
    # Scores keep 4 decimals (store.metrics.Rounded).
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3, abs=1e-4)
    assert s.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), abs=1e-4)
    assert s.correlation == pytest.approx(np.corrcoef(true.ravel(), pred.ravel())[0, 1], abs=1e-4)
    means = LayerMeans.of([s, score_windows(true, np.zeros_like(true))])
    assert means.precision == pytest.approx(0.5)  # undefined precision (nothing predicted) skipped
    assert means.f1 == pytest.approx(s.f1 / 2, abs=1e-4)  # F1 0 where nothing predicted


def test_the_floor_is_each_tokens_mean_and_the_neurons_mean_where_unseen() -> None:
    codes = np.array([[0, 1, 1, 2]])
    acts = np.array([[[0.2], [1.0], [0.4], [0.0]]])  # (W, P, N)
    table = mean_lookup(codes, acts, 4)
    assert table[:, 0].tolist() == pytest.approx([0.2, 0.7, 0.0, 0.4])


# --------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def rule_sample(tmp_path_factory):
    """Windows of the rule model's corpus, their classes and every rule neuron's activations."""
    model = rule_model()
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "rule.txt", documents=40)
    windows = make_windows(model, corpus, 24)
    acts = layer_activations(model, windows, [0], dtype=np.float32)[0]  # (W, P, D_MLP)
    classes = TokenClasses.of(model.vocab)
    codes = classes.of_id[windows]
    return model, windows, Sample.of(codes, classes, repeat_runs(codes, 4)), acts


def test_the_pass_reads_what_the_rule_neurons_do(rule_sample) -> None:
    model, windows, _, acts = rule_sample
    for w in (0, 3, len(windows) - 1):  # BOS before each window, as the builds forward them
        truth = model.bridge.activations(torch.tensor([[model.bos_id, *windows[w]]]))[0, 1:]
        assert np.allclose(acts[w], truth.numpy())
    assert acts[:, :, EXCEPT].max() == 1.0


def test_calibration_sets_a_paths_end_to_the_mean_activation_of_its_matches(rule_sample) -> None:
    model, windows, sample, acts = rule_sample
    trie = NeuronTrie()
    trie.insert((" except",), 1.0)  # fires only with " everyone" within 3 tokens before
    trie.insert((" except", IGNORE, " everyone"), 0.2, [0.0, 0.9])  # always fires
    out = calibrate(trie, sample, acts[:, :, EXCEPT])
    at_except = acts[:, :, EXCEPT][windows == model.vocab.index(" except")]
    assert 0.2 < out[(" except",)] < 0.8
    assert out[(" except",)] == pytest.approx(at_except.mean())
    assert out[(" except", IGNORE, " everyone")] == pytest.approx(1.0)


def test_calibration_grades_a_context_the_neuron_half_needs(rule_sample) -> None:
    # HALF fires on " home" at 0.8 after " went" anywhere before, else 0.45: a path for
    # " home" alone ends at the corpus mix of the two, never at the top windows' 0.8.
    model, windows, sample, acts = rule_sample
    trie = NeuronTrie()
    trie.insert((" home",), 0.8)
    home = windows == model.vocab.index(" home")
    assert home.sum() > 10
    expected = acts[:, :, HALF][home].mean()
    assert 0.45 < expected < 0.8
    assert calibrate(trie, sample, acts[:, :, HALF])[(" home",)] == pytest.approx(expected)


def test_unmatched_paths_are_kept_dropped_or_backed_off_as_asked(rule_sample) -> None:
    _, _, sample, acts = rule_sample
    trie = NeuronTrie()
    trie.insert((" the",), 0.3)
    trie.insert((" the", " except", " except"), 0.9, [0.9, 0.9])  # never in the corpus
    a = acts[:, :, TOKEN]
    assert calibrate(trie, sample, a)[(" the", " except", " except")] == 0.9
    assert (" the", " except", " except") not in calibrate(trie, sample, a, CalibrationConfig(unmatched="drop"))
    backed = calibrate(trie, sample, a, CalibrationConfig(unmatched="backoff"))
    assert backed[(" the", " except", " except")] == pytest.approx(0.8)  # " the" is always 0.8
    assert calibrate(trie, sample, a)[(" the",)] == pytest.approx(0.8)


def test_token_paths_add_the_tokens_the_neuron_is_active_on(rule_sample) -> None:
    _, _, sample, acts = rule_sample
    out = calibrate(NeuronTrie(), sample, acts[:, :, TOKEN], CalibrationConfig(token_paths=True))
    assert dict(out) == {(" the",): pytest.approx(0.8)}


def _hand_sample(rows: list[str], values: list[list[float]]) -> tuple[Sample, np.ndarray]:
    """Windows of one-letter tokens (' a', ' b', ...) with the neuron's activations."""
    vocab = [" a", " b", " c", " d"]
    classes = TokenClasses.of(vocab)
    codes = np.array([[vocab.index(" " + t) for t in row.split()] for row in rows])
    return Sample.of(codes, classes, repeat_runs(codes, 1)), np.array(values, dtype=np.float64)


def test_with_a_default_tokens_below_the_neurons_mean_get_negative_paths() -> None:
    sample, acts = _hand_sample(["a b c d", "a b c c"], [[0.0, -0.8, 0.1, 0.0], [0.0, -0.8, 0.1, 0.1]])
    config = CalibrationConfig(token_paths=True, default=True, token_delta=0.2, token_min=1)
    out = calibrate(NeuronTrie(), sample, acts, config)
    # The mean is -0.1625: ' b' (-0.8) and ' c' (0.1) depart from it by 0.2 or more.
    assert dict(out) == {(" b",): pytest.approx(-0.8), (" c",): pytest.approx(0.1)}
    plain = CalibrationConfig(token_paths=True, token_delta=0.2, token_min=1)  # default 0, no dips
    assert dict(calibrate(NeuronTrie(), sample, acts, plain)) == {}


def test_the_token_budget_keeps_the_tokens_that_explain_most_variance() -> None:
    # ' a' departs by 0.5 on 2 tokens (0.5), ' c' by 0.3 on 6 tokens (0.54): ' c' goes first.
    sample, acts = _hand_sample(["a a c c c b", "c c c b b b"], [[0.5, 0.5, 0.3, 0.3, 0.3, 0.0],
                                                                 [0.3, 0.3, 0.3, 0.0, 0.0, 0.0]])
    config = CalibrationConfig(token_paths=True, token_delta=0.1, token_min=1, token_budget=1)
    assert list(calibrate(NeuronTrie(), sample, acts, config)) == [(" c",)]


def test_bigram_paths_say_which_previous_token_changes_the_activation() -> None:
    # ' b' is 1.0 after ' a' and 0 after ' c'.
    sample, acts = _hand_sample(["a b c b", "a b c b", "a b c b"], [[0, 1, 0, 0]] * 3)
    config = CalibrationConfig(token_paths=True, bigram_paths=True, token_delta=0.1)
    out = calibrate(NeuronTrie(), sample, acts, config)
    assert out[(" b",)] == pytest.approx(0.5)
    assert out[(" b", " a")] == pytest.approx(1.0) and out[(" b", " c")] == pytest.approx(0.0)
    compiled = CompiledGraph.of(out, sample.classes)
    assert predict_windows(compiled, sample.codes, rule="specific")[0].tolist() == [0, 1, 0, 0]


def test_interval_pivots_come_from_every_band_of_the_range_and_skip_excluded_windows() -> None:
    from builder.stages.intervals import interval_pivots

    acts = np.zeros((4, 8))
    acts[0, 1], acts[1, 2], acts[2, 3], acts[3, 4] = 1.0, 0.6, 0.3, 0.9
    pivots = interval_pivots(acts, intervals=3, per_bin=1, low=0.1)
    bands = sorted(int(acts[w, p] * 3.0 / 0.9 - 0.34) for w, p in pivots)  # which third of (0.1, 1]
    assert len(pivots) == 3 and len(set(bands)) == 3
    excluded = interval_pivots(acts, intervals=3, per_bin=4, low=0.1, exclude=np.array([1, 0, 0, 0], bool))
    assert (0, 1) not in excluded and set(excluded) == {(1, 2), (2, 3), (3, 4)}


def test_a_path_with_too_few_sample_matches_keeps_its_top_window_end() -> None:
    sample, acts = _hand_sample(["a b c d", "a b c c"], [[0.0, 0.1, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0]])
    trie = NeuronTrie()
    trie.insert((" b", " a"), 0.9, [0.9])  # two matches in the sample, mean 0.2
    assert calibrate(trie, sample, acts)[(" b", " a")] == pytest.approx(0.2)
    assert calibrate(trie, sample, acts, CalibrationConfig(min_matches=3))[(" b", " a")] == 0.9


def test_pairs_found_once_for_a_sample_calibrate_its_windows_as_found_afresh(rule_sample) -> None:
    """The build finds the sample's (token, previous) pairs once a layer and leaves out each
    neuron's test windows by rows; the bigram paths are those of the rows' own pairs."""
    _, windows, sample, acts = rule_sample
    keep = np.arange(len(windows)) % 3 != 0
    config = CalibrationConfig(token_paths=True, default=True, token_delta=0.0, token_budget=20,
                               bigram_paths=True, bigram_delta=0.02, bigram_budget=15)
    for neuron in (EXCEPT, HALF):
        a = acts[keep, :, neuron]
        shared = calibrate(NeuronTrie(), sample.with_pairs().rows(keep), a, config)
        fresh = calibrate(NeuronTrie(), Sample.of(sample.codes[keep], sample.classes), a, config)
        assert shared.to_rows() == fresh.to_rows() and any(len(p) == 2 for p in shared)
