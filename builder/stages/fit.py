"""Graph building: snippets and their importances in, a :class:`store.trie.NeuronTrie` out.

Each snippet makes one path (paper, "Graph Building"): the pivot (activating) token, then,
walking backwards, every earlier token whose importance reaches ``important`` as itself and every
other token as IGNORE. The end of the path holds the snippet's normalised activation
(activation / the neuron's max activation).

Decisions beyond the paper (each a :class:`builder.config.FitConfig` field):

- IGNORE nodes beyond the farthest important token are dropped. They would only demand that a
  text have that many earlier tokens, which makes a graph miss its own pattern near the start of
  a text for reasons unrelated to the neuron.
- ``scale``: a pruned snippet's END is its *full* example's activation (the reference code's
  rescaling), since pruning keeps as little as half the activation.
- ``backoff``: every path's shorter forms (cut after each important context token, down to the
  activating token alone) become candidate paths too.
- ``token_paths``: every token that fires in the train text becomes a candidate context-free path.
- ``probe_layers``: in early layers, tokens on which the neuron fires standing alone become
  candidates too, and keep the probe's value where no train text says otherwise.
- ``repeats``: where the neuron fires far more often on tokens that continue an earlier copy in
  their own window than on other tokens, repeat paths (``(REPEAT,) * n``: "the n tokens
  ending here occurred earlier, in order") become candidates. A kept one replaces the literal
  paths it subsumes, so an induction-like neuron's graph says "repeat", not a list of the
  tokens that happened to repeat in its top windows.
- ``calibrate``: each END is set from what the path's matches on the train windows and random
  train windows really do (mean normalised activation), and whether it predicts firing from the
  share of those matches that fire. Without it, one example decides a path's END, whatever the
  path matches elsewhere; with it, a context-free path is kept only where the token alone
  predicts firing, and a path that matches mostly where the neuron is silent stops predicting
  firing.

In: the snippets (:class:`FitSnippet`: token strings, pivot last, importances, normalised
activation); optionally the train windows with their true normalised activations
(:class:`TrainText`). Out: the trie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from builder.config import FitConfig
from store.metrics import FIRING_THRESHOLD
from store.tokens import normalize
from store.tokens import repeat_lengths
from store.trie import IGNORE, REPEAT, NeuronTrie, Node, Token

BELOW_FIRING = 0.49
"""The END given to a calibrated path that should not predict firing but whose matches' mean
activation reaches the threshold (rare: a few strong firings among many silent matches)."""

MIN_REPEAT_FIRING = 5
"""Fewest firing tokens in the train text for their repeat rate to propose a repeat path; a
rate over fewer says little."""


@dataclass(frozen=True)
class FitSnippet:
    """One snippet as the fit reads it: the path it makes and where that path ends."""

    tokens: Sequence[str]
    """Token strings, pivot last."""
    importances: Sequence[float]
    """Saliency of each token (``builder.stages.saliency``)."""
    activation: float
    """Normalised activation the path should end with when nothing else is known (the pruned
    text's, or with ``FitConfig.scale`` its full example's)."""


@dataclass(frozen=True)
class TrainText:
    """A train window: its token strings and the neuron's normalised activation on each."""

    tokens: Sequence[str]
    activations: np.ndarray


def snippet_path(tokens: Sequence[str], importances: Sequence[float],
                 important: float) -> tuple[tuple[Token, ...], tuple[float, ...]]:
    """The path of one snippet (pivot last) and the importances of its context nodes.

    >>> snippet_path(["a", " everyone", " else", " except"], [0.1, 0.9, 0.2, 1.0], 0.75)
    ((' except', None, ' everyone'), (0.2, 0.9))
    """
    path: list[Token] = [tokens[-1]]
    weights: list[float] = []
    for k in range(len(tokens) - 2, -1, -1):
        keep = importances[k] >= important
        path.append(tokens[k] if keep else IGNORE)
        weights.append(float(importances[k]))
    while len(path) > 1 and path[-1] is IGNORE:
        path.pop()
        weights.pop()
    return tuple(path), tuple(weights)


def shorter_forms(path: Sequence[Token]) -> list[tuple[Token, ...]]:
    """The path cut after each of its important tokens, shortest first, the path itself excluded.

    >>> shorter_forms((" except", None, " everyone", " all"))
    [(' except',), (' except', None, ' everyone')]
    """
    return [tuple(path[:k + 1]) for k in range(len(path) - 1) if path[k] is not IGNORE]


def repeat_candidates(texts: Sequence[TrainText], reach: int, lift: float, share: float,
                      normalized: bool = False) -> list[int]:
    """Lengths ``n`` (1..``reach``) at which the neuron fires far more often on tokens that
    continue an earlier ``n``-token copy in their own text than on tokens that do not.

    Pooled over every text given (train top windows, random calibration windows and any texts
    made to show in-context behaviour): the firing rate on the repeating tokens must reach
    ``share`` and ``lift`` times the rate on the others. A neuron that fires on some tokens
    wherever they stand fires on their repeats as often as on their first occurrences, so it is
    offered nothing however much its texts repeat.

    >>> copy = TrainText(list("abcdefabcdef"), np.array([0.0] * 7 + [1.0] * 5))  # fires on "bcdef"
    >>> noise = TrainText(list("pqrstuvwxyz"), np.zeros(11))
    >>> repeat_candidates([copy, noise], reach=4, lift=2.0, share=0.2)
    [1, 2, 3, 4]
    >>> letters = TrainText(list("abcdefabcdef"), np.array([float(t in "acf") for t in "abcdefabcdef"]))
    >>> repeat_candidates([letters], reach=4, lift=2.0, share=0.2)
    []
    """
    key = normalize if normalized else str
    if not texts:
        return []
    runs = np.concatenate([np.asarray(repeat_lengths([key(t) for t in x.tokens], reach), dtype=np.int64)
                           for x in texts])  # (positions,)
    firing = np.concatenate([x.activations for x in texts]) >= FIRING_THRESHOLD  # (positions,)
    if firing.sum() < MIN_REPEAT_FIRING:
        return []
    out = []
    for n in range(1, reach + 1):
        repeating = runs >= n
        if not repeating.any():
            break
        rate = float(firing[repeating].mean())
        other = float(firing[~repeating].mean()) if (~repeating).any() else 0.0
        if rate >= share and rate >= lift * other:
            out.append(n)
    return out


def _level(acts: np.ndarray, firing_share: float) -> float:
    """The END of a path whose matches have these true normalised activations."""
    mean = max(0.0, float(acts.mean()))
    if np.mean(acts >= FIRING_THRESHOLD) >= firing_share:
        return max(mean, FIRING_THRESHOLD)
    return min(mean, BELOW_FIRING)


def _judge(node: Node, idx: np.ndarray, acts: np.ndarray, firing_share: float) -> bool:
    """Whether a candidate whose judged matches are ``idx`` predicts firing; if so, set its END."""
    if idx.size and np.mean(acts[idx] >= FIRING_THRESHOLD) >= firing_share:
        node.end = max(float(acts[idx].mean()), FIRING_THRESHOLD)
        return True
    return False


def _subsumed(keep: set[int], repeats: list[tuple[int, Node, int]], where: dict[int, list[int]],
              reach: dict[int, list[int]], acts: np.ndarray) -> None:
    """Drop (from ``keep``, in place) the paths that the kept repeat paths make redundant.

    ``where`` holds each path's matches in the train text, ``reach`` those in the repeat texts
    too (positions into ``acts``). A path is redundant where every firing token it matches is
    matched by a repeat path already taken: those tokens are predicted to fire without it, and what it adds
    elsewhere is only predictions on tokens that do not fire. Dropping it therefore never lowers
    the train F1, and it turns a literal list of the bigrams that happened to repeat in the top
    windows into the one rule behind them. Repeat paths are taken most general (shortest) first
    and judged the same way; every other path after them. A repeat path that stays then ends at
    the mean of all its matches, since it alone speaks for them now.
    """
    fires = acts >= FIRING_THRESHOLD
    span = np.zeros(len(acts), dtype=bool)

    def redundant(key: int) -> bool:
        idx = np.asarray(reach[key])
        return bool(span[idx[fires[idx]]].all())

    taken = []
    for key, node, _ in sorted(repeats, key=lambda r: r[2]):
        if redundant(key):
            keep.discard(key)
        else:
            span[np.asarray(reach[key])] = True
            taken.append((key, node))
    for key in list(keep):
        if all(key != k for k, _ in taken) and key in where and redundant(key):
            keep.discard(key)
    for key, node in taken:
        node.end = max(float(acts[np.asarray(reach[key])].mean()), FIRING_THRESHOLD)


def _calibrate(trie: NeuronTrie, train: Sequence[TrainText], made: dict[int, Node],
               shorter: dict[int, tuple[Node, int]], probed: dict[int, float],
               firing_share: float, repeats: dict[int, tuple[Node, int]] | None = None,
               repeat_texts: Sequence[TrainText] = ()) -> set[int]:
    """Set the ENDs from the train texts (in place) and choose the shorter forms to keep.

    The snippets' own paths (``made``) get the level of all their matches. Repeat paths
    (``repeats``: id -> (node, length)) are judged next, longest first, each on the matches that
    longer kept repeat paths leave, so that "any repeated token" is kept only where tokens that
    continue no longer copy fire too. A shorter form (``shorter``: id -> (node, path length)) is
    judged, most specific first, only on the tokens where nothing kept so far predicts firing:
    under the max rule those are the only tokens whose prediction it changes, so a context-free
    path is kept where the token fires without the context, not merely because it matches where
    the longer paths already fire. A probed token (``probed``: id -> its activation alone) that no
    train text holds keeps its probe value. Last, kept repeat paths replace the paths they
    subsume (:func:`_subsumed`).

    Returns:
        ``id`` of every end node to keep.
    """
    # Positions run over the train texts, then the repeat texts (judged only for repeat paths).
    texts = [*train, *repeat_texts] if repeats else list(train)
    acts = np.concatenate([t.activations for t in texts]).astype(np.float64)  # (positions,)
    corpus = sum(len(t.activations) for t in train)
    reach: dict[int, list[int]] = {}  # every match, repeat texts included
    at = 0
    for text in texts:
        for ends in trie.matches(text.tokens):
            for node in ends:
                reach.setdefault(id(node), []).append(at)
            at += 1
    where = {key: [p for p in found if p < corpus] for key, found in reach.items()}
    where = {key: found for key, found in where.items() if found}
    covered = np.zeros(len(acts), dtype=bool)
    for key, node in made.items():
        if key in where:
            node.end = _level(acts[where[key]], firing_share)
        if node.end is not None and node.end >= FIRING_THRESHOLD and key in where:
            covered[where[key]] = True
    keep = set(made)
    kept_repeats: list[tuple[int, Node, int]] = []
    repeat_covered = np.zeros(len(acts), dtype=bool)
    for key, (node, n) in sorted((repeats or {}).items(), key=lambda kv: -kv[1][1]):
        if key in made or key not in reach:
            continue
        idx = np.asarray(reach[key])
        if _judge(node, idx[~repeat_covered[idx]], acts, firing_share):
            repeat_covered[idx] = True
            kept_repeats.append((key, node, n))
            keep.add(key)
    covered |= repeat_covered
    for key, (node, _) in sorted(shorter.items(), key=lambda kv: -kv[1][1]):
        if key in made or key in keep:
            continue
        if key not in where:
            if key in probed:
                node.end = probed[key]
                keep.add(key)
            continue
        idx = np.asarray(where[key])
        idx = idx[~covered[idx]]
        if _judge(node, idx, acts, firing_share):
            covered[idx] = True
            keep.add(key)
    if kept_repeats:
        _subsumed(keep, kept_repeats, where, reach, acts)
    return keep


def fit(snippets: Sequence[FitSnippet], config: FitConfig, train: Sequence[TrainText] = (),
        firing_tokens: Sequence[str] = (), probed: Sequence[tuple[str, float]] = (),
        repeat_texts: Sequence[TrainText] = ()) -> NeuronTrie:
    """Build one neuron's trie.

    Args:
        snippets: one path each (tokens, importances, the activation its END takes uncalibrated).
        config: the importance threshold and the calibration settings.
        train: texts whose true activations calibrate the ENDs (``config.calibrate``): the
            train top windows and random train windows.
        firing_tokens: tokens that fire somewhere in the train text, offered as context-free
            candidates (``config.token_paths``).
        probed: ``(token, normalised activation)`` of tokens on which the neuron fires standing
            alone (``builder.probes.tokens``), offered as context-free candidates; where no train
            text holds the token, the probe's value is its END.
        repeat_texts: texts that show in-context behaviour (the repeated-sequence probe), added
            to ``train`` where repeat paths are proposed and judged, and nowhere else.
    """
    calibrate = config.calibrate and bool(train)
    trie = NeuronTrie(normalized=config.normalized and calibrate)
    made: dict[int, Node] = {}  # end nodes of the snippets' own paths
    shorter: dict[int, tuple[Node, int]] = {}  # end nodes of their shorter forms
    for snippet in snippets:
        path, weights = snippet_path(snippet.tokens, snippet.importances, config.important)
        trie.insert(path, float(snippet.activation), weights)
        node = trie.node(path)
        made[id(node)] = node
        if config.backoff and calibrate:
            for short in shorter_forms(path):
                trie.insert(short, 0.0, weights[:len(short) - 1])
                node = trie.node(short)
                shorter[id(node)] = (node, len(short))
    if config.token_paths and calibrate:
        for token in firing_tokens:
            trie.insert((token,), 0.0)
            node = trie.node((token,))
            shorter[id(node)] = (node, 1)
    repeats: dict[int, tuple[Node, int]] = {}  # end nodes of the repeat paths
    if config.repeats and calibrate:
        for n in repeat_candidates([*train, *repeat_texts], config.repeat_reach, config.repeat_lift,
                                   config.firing_share, trie.normalized):
            path = (REPEAT,) * n
            # A repeat node is what its path requires, so it counts as fully important.
            trie.insert(path, 0.0, [1.0] * (n - 1))
            node = trie.node(path)
            repeats[id(node)] = (node, n)
    probe_values: dict[int, float] = {}
    if calibrate:
        for token, value in probed:
            trie.insert((token,), 0.0)
            node = trie.node((token,))
            shorter[id(node)] = (node, 1)
            probe_values[id(node)] = max(value, probe_values.get(id(node), 0.0))
    if not calibrate:
        return trie
    keep = _calibrate(trie, train, made, shorter, probe_values, config.firing_share, repeats,
                      repeat_texts)
    return trie.filtered(lambda _, node: id(node) in keep)
