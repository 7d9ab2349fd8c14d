"""Augmentation: variants of each snippet with an important token substituted.

In: snippets, their token importances, a helper that proposes substitutes. Out: the variants
whose pivot activation stays at least ``keep`` (0.5) of their original's (the paper's eq. 4).
Each important token is substituted in turn, one at a time; every variant of every neuron is
measured in shared forward passes.

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
from typing import Protocol

import numpy as np
import torch

from builder.config import AugmentConfig
from builder.forward import next_token_logits, pivot_activations
from builder.models import LoadedModel
from builder.prune import Snippet
from store.errors import UnknownModel
from store.tokens import normalize


class Helper(Protocol):
    """Proposes substitutes for one token of a sequence."""

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        """Up to ``n`` substitute ids for ``rows[i][positions[i]]``, never the token itself."""
        ...


def _top_ids(scores: torch.Tensor, exclude: set[int], n: int) -> list[int]:
    """The ``n`` best-scoring ids not in ``exclude``."""
    ranked = scores.topk(min(n + len(exclude) + 1, scores.numel())).indices.tolist()
    return [i for i in ranked if i not in exclude][:n]


class EmbeddingNeighbours:
    """Substitutes are the token's nearest neighbours in the embedding matrix (cosine)."""

    def __init__(self, model: LoadedModel) -> None:
        w = model.embedding().detach().float()
        self._unit = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # (d_vocab, d_model)
        self._special = set(model.special_ids)
        self._cache: dict[int, list[int]] = {}

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        tokens = [row[k] for row, k in zip(rows, positions, strict=True)]
        todo = sorted({t for t in tokens if t not in self._cache})
        if todo:
            sims = self._unit[todo] @ self._unit.T  # (todo, d_vocab)
            for t, row in zip(todo, sims, strict=True):
                self._cache[t] = _top_ids(row, self._special | {t}, n)
        return [self._cache[t][:n] for t in tokens]


class ModelPredictions:
    """Substitutes are the model's own most likely tokens at the position, given what precedes."""

    def __init__(self, model: LoadedModel, max_batch_tokens: int = 8192) -> None:
        self._model = model
        self._special = set(model.special_ids)
        self._max_batch_tokens = max_batch_tokens

    def substitutes(self, rows: Sequence[tuple[int, ...]], positions: Sequence[int],
                    n: int) -> list[list[int]]:
        unique = sorted(set(rows))
        logits = dict(zip(unique, next_token_logits(self._model, unique, self._max_batch_tokens),
                          strict=True))
        return [_top_ids(logits[row][k], self._special | {row[k]}, n)
                for row, k in zip(rows, positions, strict=True)]


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


def augment(model: LoadedModel, layer: int, snippets: Sequence[Snippet],
            importances: Sequence[np.ndarray], helper: Helper | None, config: AugmentConfig,
            max_batch_tokens: int = 8192, fold: bool = False) -> list[Snippet]:
    """Variants of the snippets that keep the neuron firing; ``parent`` indexes ``snippets``.

    With ``fold`` (the fit matches tokens folded) and ``config.distinct``, substitutes that fold
    to the replaced token or to each other are skipped, and more are asked for in their place.
    """
    if helper is None:
        return []
    rows, positions, parents = [], [], []
    for i, (s, imp) in enumerate(zip(snippets, importances, strict=True)):
        last = len(s.tokens) - 1
        for k in range(len(s.tokens)):
            if (k < last and imp[k] >= config.important) or (k == last and config.pivot):
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
