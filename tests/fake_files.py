"""Files of the fake model (``tests/fakes.py``): its output-token file and small scan files
(random, or by its rule).

With them a server over the fake answers find_by_output, output_effects, export_neuron and the
output lists of get_graph and top_activations; ``tests/data/logits-v1.npz`` is
:func:`rule_logits` written as version 1 (the golden file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from store.logitfile import logits_filename, write_logit_file
from store.scanfile import scan_filename, write_scan_file
from tests.fakes import MAX_ACTIVATION, VOCAB, WORDS, FakeLiveBackend
N_LAYERS, D_MLP, K = 4, 64, 3


def rule_logits(fake: FakeLiveBackend) -> dict[str, np.ndarray]:
    """Output lists by the fake's rule: neuron (l, n) promotes its activating word first (then the
    two words after it) and suppresses its context word first; a deeper layer pushes harder."""
    shape = (N_LAYERS, D_MLP, K)
    arrays = {"promoted_id": np.zeros(shape, int), "promoted_value": np.zeros(shape),
              "suppressed_id": np.zeros(shape, int), "suppressed_value": np.zeros(shape)}
    for layer in range(N_LAYERS):
        for n in range(D_MLP):
            act, ctx = fake.rule(layer, n)
            a, c = VOCAB.index(act), VOCAB.index(ctx)
            arrays["promoted_id"][layer, n] = [a, 1 + a % len(WORDS), 1 + (a + 1) % len(WORDS)]
            arrays["promoted_value"][layer, n] = [2.0 + layer, 1.0, 0.5]
            arrays["suppressed_id"][layer, n] = [c, 1 + c % len(WORDS), 1 + (c + 1) % len(WORDS)]
            arrays["suppressed_value"][layer, n] = [-2.0, -1.0, -0.5]
    return arrays


def write_rule_files(stores: Path, fake: FakeLiveBackend) -> None:
    """The fake model's output-token file and a small scan file (random windows, max 4.0 everywhere)."""
    write_logit_file(stores / logits_filename("test-model"), model="test-model", vocab=list(VOCAB),
                     path_note="the fake's rule", excluded=1, **rule_logits(fake))
    rng = np.random.default_rng(0)
    windows = rng.integers(1, len(VOCAB), size=(32, 8))
    top_window = rng.integers(0, 32, size=(N_LAYERS, 5, D_MLP))
    values = np.broadcast_to(np.linspace(MAX_ACTIVATION, 1.0, 5)[None, :, None], top_window.shape)
    stat = np.full((N_LAYERS, D_MLP), MAX_ACTIVATION)
    write_scan_file(stores / scan_filename("test-model"), model="test-model", hook="blocks.{layer}.mlp.hook_post",
                    vocab=list(VOCAB), windows=windows, top_window=top_window,
                    top_position=np.full(top_window.shape, 4), top_value=values, max_activation=stat,
                    density=stat * 0.01, quantiles={0.5: stat * 0.1}, mean=stat * 0.05,
                    random_windows=np.arange(4), seed=0, windows_key="fake")


def write_rule_scan(stores: Path, fake: FakeLiveBackend, windows: int = 24, width: int = 6, top_k: int = 16,
                    seed: int = 0) -> np.ndarray:
    """A scan of the fake model by its rule (unlike :func:`write_rule_files`' random one): random
    windows of its words, and each neuron's ``top_k`` windows by largest activation (ties: by
    window), peaking at its first largest token. Returns the windows' token ids."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, len(VOCAB), size=(windows, width))
    texts = [[VOCAB[i] for i in row] for row in ids]
    shape = (N_LAYERS, top_k, D_MLP)
    top_window, top_position, top_value = np.zeros(shape, int), np.zeros(shape, int), np.zeros(shape)
    largest = np.zeros((N_LAYERS, D_MLP))
    for layer in range(N_LAYERS):
        for n in range(D_MLP):
            acts = np.array([fake.raw(layer, n, row) for row in texts])  # (windows, width)
            best = acts.max(axis=1)
            order = np.argsort(-best, kind="stable")[:top_k]
            top_window[layer, :, n], top_value[layer, :, n] = order, best[order]
            top_position[layer, :, n] = acts[order].argmax(axis=1)
            largest[layer, n] = best.max()
    write_scan_file(stores / scan_filename("test-model"), model="test-model", hook="blocks.{layer}.mlp.hook_post",
                    vocab=VOCAB, windows=ids, top_window=top_window, top_position=top_position,
                    top_value=top_value, max_activation=largest, density=largest * 0.01,
                    quantiles={0.5: largest * 0.0}, mean=largest * 0.05, random_windows=np.arange(4), seed=0,
                    windows_key="rule")
    return ids
