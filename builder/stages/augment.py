"""Augmentation: variants of each snippet with an important token substituted.

In: snippets with their token importances, a helper that proposes substitutes. Out: the variants
whose pivot activation stays at least ``keep`` (0.5) of their original's (the paper's eq. 4).
Each important token is substituted in turn, one at a time; every variant of every neuron is
measured in shared forward passes. :func:`measure_variants` then gives each variant its
importances: its original's, or (a substituted pivot) pruned and measured afresh.

Helpers (``AugmentConfig.helper``):

- ``embedding``: nearest neighbours of the token in the model's own embedding matrix (cosine),
  no extra model and no context: works offline, costs one matrix product.
- ``model``: the model's own next-token distribution at the position, from the tokens before it
  (a causal model cannot see the right context, unlike the paper's masked LM).
- ``distilbert``: the paper's helper, ``distilbert-base-uncased`` filling a ``[MASK]``; needs the
  Hugging Face hub. Its words are kept where they are one token of the target model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import torch

from builder.config import AugmentConfig, BuildConfig
from builder.forward import next_token_logits, pivot_activations
from builder.models import LoadedModel
from builder.stages.examples import TopExample
from builder.stages.prune import Snippet, prune
from builder.stages.saliency import saliency
from store.errors import UnknownModel
from store.tokens import normalize


class Helper(Protocol):
    """Proposes substitutes for one token of a sequence."""

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        """Up to ``n`` substitute ids for ``rows[i][positions[i]]``, never the token itself."""
        ...


def _banned(model: LoadedModel, vocab: int) -> torch.Tensor:
    """``(vocab,)`` True at the model's special tokens, which are never proposed."""
    banned = torch.zeros(vocab, dtype=torch.bool)
    banned[[i for i in model.special_ids if i < vocab]] = True
    return banned


def _top_ids(scores: torch.Tensor, banned: torch.Tensor, own: int, n: int) -> list[int]:
    """The ``n`` best-scoring ids, neither banned nor ``own``."""
    ranked = scores.masked_fill(banned[:scores.numel()], -torch.inf).topk(min(n + 1, scores.numel()))
    return [i for i, v in zip(ranked.indices.tolist(), ranked.values.tolist(), strict=True)
            if i != own and v > -torch.inf][:n]


def _groups(rows: Sequence[tuple[int, ...]], max_tokens: int) -> list[list[tuple[int, ...]]]:
    """Consecutive rows in groups of at most ``max_tokens`` tokens (a longer row alone).

    >>> _groups([(1, 2), (3,), (4, 5, 6), (7,)], 3)
    [[(1, 2), (3,)], [(4, 5, 6)], [(7,)]]
    """
    groups: list[list[tuple[int, ...]]] = []
    size = 0
    for row in rows:
        if not groups or size + len(row) > max_tokens:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += len(row)
    return groups


LOGIT_BUDGET = 1 << 27
"""Floats of logits or similarities held at once (512 MB): a row of Gemma's is 262,144 floats,
so a batch that fits SmolLM2's 49,152-token vocabulary comfortably would not fit Gemma's."""


class EmbeddingNeighbours:
    """Substitutes are the token's nearest neighbours in the embedding matrix (cosine).

    Memory stays bounded for any vocabulary: the model's own matrix is read in blocks of rows (no
    normalised copy: that would be 671 MB for Gemma's 262,144 x 640), and similarities are held
    for at most ``LOGIT_BUDGET`` pairs at once.
    """

    def __init__(self, model: LoadedModel, block: int = 32768) -> None:
        self._w = model.embedding().detach()  # (d_vocab, d_model), shared with the model
        self._block = block
        vocab = self._w.shape[0]
        norms = torch.cat([self._w[i:i + block].float().norm(dim=-1)
                           for i in range(0, vocab, block)])  # (d_vocab,)
        self._inv_norm = 1.0 / norms.clamp_min(1e-8)
        self._banned = _banned(model, vocab)  # (d_vocab,)
        self._queries = max(1, LOGIT_BUDGET // vocab)
        self._cache: dict[int, list[int]] = {}

    def _neighbours(self, tokens: list[int], n: int) -> list[list[int]]:
        """The ``n`` nearest non-special neighbours of each token, itself excluded."""
        queries = self._w[tokens].float() * self._inv_norm[tokens, None]  # (q, d_model)
        best = torch.full((len(tokens), n), -torch.inf)  # (q, n)
        best_ids = torch.zeros((len(tokens), n), dtype=torch.long)  # (q, n)
        own = torch.as_tensor(tokens)[:, None]  # (q, 1)
        for start in range(0, self._w.shape[0], self._block):
            rows = slice(start, start + self._block)
            sims = (queries @ self._w[rows].float().T) * self._inv_norm[rows]  # (q, block)
            ids = torch.arange(start, start + sims.shape[1])  # (block,)
            sims[:, self._banned[rows]] = -torch.inf
            sims[ids[None, :] == own] = -torch.inf
            k = min(n, sims.shape[1])
            values, index = sims.topk(k, dim=-1)  # (q, k)
            merged, order = torch.cat([best, values], dim=1).topk(n, dim=-1)  # (q, n)
            best_ids = torch.cat([best_ids, ids[index]], dim=1).gather(1, order)
            best = merged
        return [[i for i, v in zip(row, vals, strict=True) if v > -torch.inf]
                for row, vals in zip(best_ids.tolist(), best.tolist(), strict=True)]

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        tokens = [row[k] for row, k in zip(rows, positions, strict=True)]
        todo = sorted({t for t in tokens if len(self._cache.get(t, ())) < n})
        for start in range(0, len(todo), self._queries):
            chunk = todo[start:start + self._queries]
            self._cache.update(zip(chunk, self._neighbours(chunk, n), strict=True))
        return [self._cache[t][:n] for t in tokens]


class ModelPredictions:
    """Substitutes are the model's own most likely tokens at the position, given what precedes.

    Rows are run in groups whose logits (tokens x vocabulary) fit ``LOGIT_BUDGET``, and each
    group's logits are dropped once the requested positions are ranked.
    """

    def __init__(self, model: LoadedModel, max_batch_tokens: int = 8192) -> None:
        self._model = model
        self._banned = _banned(model, len(model.vocab))
        self._max_tokens = max(1, min(max_batch_tokens, LOGIT_BUDGET // len(model.vocab)))

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        asked: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(rows):
            asked.setdefault(row, []).append(i)
        out: list[list[int]] = [[] for _ in rows]
        for group in _groups(sorted(asked), self._max_tokens):
            logits = next_token_logits(self._model, group, self._max_tokens)  # each (len, d_vocab)
            for row, row_logits in zip(group, logits, strict=True):
                for i in asked[row]:
                    k = positions[i]
                    out[i] = _top_ids(row_logits[k], self._banned, row[k], n)
        return out


class DistilBERTFill:
    """The paper's helper: DistilBERT fills the masked position (needs the Hugging Face hub)."""

    NAME = "distilbert-base-uncased"

    def __init__(self, model: LoadedModel) -> None:
        try:
            from transformers import pipeline

            self._fill = pipeline("fill-mask", model=self.NAME, device=model.device)
        except (OSError, ValueError) as exc:
            raise UnknownModel(
                f"augmentation helper 'distilbert' needs {self.NAME} from the Hugging Face hub, "
                "which is not reachable here; use --augment embedding or model"
            ) from exc
        self._model = model

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        vocab, out = self._model.vocab, []
        for row, k in zip(rows, positions, strict=True):
            space = " " if vocab[row[k]].startswith(" ") else ""
            masked = ("".join(vocab[t] for t in row[:k]) + space + self._fill.tokenizer.mask_token
                      + "".join(vocab[t] for t in row[k + 1:]))
            found: list[int] = []
            for guess in self._fill(masked, top_k=4 * n):
                ids = self._model.encode(space + guess["token_str"].strip())
                if len(ids) == 1 and ids[0] != row[k] and ids[0] not in found:
                    found.append(ids[0])
            out.append(found[:n])
        return out


def make_helper(name: str, model: LoadedModel, max_batch_tokens: int = 8192) -> Helper | None:
    """The helper named in the config, or None for 'none'."""
    if name == "none":
        return None
    if name == "embedding":
        return EmbeddingNeighbours(model)
    if name == "model":
        return ModelPredictions(model, max_batch_tokens)
    if name == "distilbert":
        return DistilBERTFill(model)
    raise ValueError(f"unknown augmentation helper {name!r}")


def _distinct_folded(vocab: Sequence[str], original: int, proposals: Sequence[int], n: int) -> list[int]:
    """The first ``n`` proposals that fold to neither the original nor an earlier proposal.

    >>> _distinct_folded(["the", " The", " THE", " a", "A", " an"], 0, [1, 2, 3, 4, 5], 2)
    [3, 5]
    """
    seen, out = {normalize(vocab[original])}, []
    for token in proposals:
        key = normalize(vocab[token])
        if key not in seen:
            seen.add(key)
            out.append(token)
    return out[:n]


def augment(model: LoadedModel, layer: int, snippets: Sequence[Snippet], helper: Helper | None,
            config: AugmentConfig, max_batch_tokens: int = 8192, fold: bool = False) -> list[Snippet]:
    """Variants of the snippets (whose importances are measured) that keep the neuron firing;
    ``parent`` indexes ``snippets``. The variants' importances are not set yet
    (:func:`measure_variants`).

    With ``fold`` (the fit matches tokens folded) and ``config.distinct``, substitutes that fold
    to the replaced token or to each other are skipped, and more are asked for in their place.
    """
    if helper is None:
        return []
    rows, positions, parents = [], [], []
    for i, s in enumerate(snippets):
        last = len(s.tokens) - 1
        for k in range(len(s.tokens)):
            if (k < last and s.importances[k] >= config.important) or (k == last and config.pivot):
                rows.append(s.tokens)
                positions.append(k)
                parents.append(i)
    if not rows:
        return []
    if fold and config.distinct:
        wide = helper.substitutes(rows, positions, 4 * config.substitutes)
        proposals = [_distinct_folded(model.vocab, row[k], subs, config.substitutes)
                     for row, k, subs in zip(rows, positions, wide, strict=True)]
    else:
        proposals = helper.substitutes(rows, positions, config.substitutes)
    seen = {(s.neuron, s.tokens) for s in snippets}
    variants: list[Snippet] = []
    for row, k, parent, subs in zip(rows, positions, parents, proposals, strict=True):
        neuron = snippets[parent].neuron
        for sub in subs:
            tokens = row[:k] + (sub,) + row[k + 1:]
            if (neuron, tokens) not in seen:
                seen.add((neuron, tokens))
                variants.append(Snippet(neuron, tokens, 0.0, parent))
    acts = pivot_activations(model, layer, [v.tokens for v in variants],
                             [v.neuron for v in variants], max_batch_tokens)
    kept = []
    for v, act in zip(variants, acts, strict=True):
        original = snippets[v.parent].activation
        if original > 0 and act >= config.keep * original:
            # The variant stands for its original's full example with one token changed.
            kept.append(Snippet(v.neuron, v.tokens, float(act), v.parent,
                                scale=snippets[v.parent].scale))
    return kept


def measure_variants(model: LoadedModel, layer: int, originals: Sequence[Snippet],
                     variants: Sequence[Snippet], mask_id: int, config: BuildConfig) -> list[Snippet]:
    """The variants in their final form, with their importances.

    A variant with a substituted context token inherits its original's importances (or has them
    measured again, with ``augment.saliency = "recompute"``). A variant with a substituted pivot is
    a new example: its new token may fire for other reasons and need a different context, so it
    is pruned and measured afresh (or, with ``augment.new_pivot = "inherit"``, it is treated like
    a context variant).
    """
    mtok = config.max_batch_tokens
    new_pivot = [v.tokens[-1] != originals[v.parent].tokens[-1]
                 and config.augment.new_pivot == "remeasure" for v in variants]
    fresh = iter(prune(model, layer, [TopExample(v.neuron, v.tokens, len(v.tokens) - 1, v.activation)
                                      for v, new in zip(variants, new_pivot, strict=True) if new],
                       config.prune, mtok))
    out = []
    for v, new in zip(variants, new_pivot, strict=True):
        if new:  # pruned again: its scale now runs from the new text to the original full example
            f = next(fresh)
            v = replace(v, tokens=f.tokens, scale=v.scale * f.scale)
        out.append(replace(v, importances=originals[v.parent].importances))
    remeasure = [i for i, new in enumerate(new_pivot) if new or config.augment.saliency == "recompute"]
    measured = saliency(model, layer, [out[i] for i in remeasure], mask_id, mtok, config.saliency.context)
    for i, m in zip(remeasure, measured, strict=True):
        out[i] = out[i].measured(m)
    return out
