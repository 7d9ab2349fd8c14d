"""What scales with the vocabulary stays bounded: embedding neighbours and next-token proposals
computed in blocks give the answers of the one-shot computation, and control tokens (Gemma marks
6,249 of them) are never proposed.

A toy model stands in for a real one: an embedding matrix, and logits that depend on the token
at each position, so a grouping mistake shows up as a wrong proposal.
"""

from __future__ import annotations

import pytest
import torch

from builder.models import LoadedModel, _special_ids
from builder.stages import augment
from builder.stages.augment import EmbeddingNeighbours, ModelPredictions

VOCAB, D_MODEL = 1000, 12
SPECIAL = frozenset({0, 1, 2, 3, *range(10, 60)})
"""Control tokens of the toy vocabulary, Gemma-like: a few named ones and a block of unused ones."""


class ToyBridge:
    """An embedding matrix, and logits at a position that depend on the token there alone."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.W_E = torch.randn(VOCAB, D_MODEL, generator=gen)  # (vocab, d_model)
        # The unused block crowds token 100's neighbourhood, as near-identical untrained rows do.
        self.W_E[10:60] = self.W_E[100] + 1e-3 * torch.randn(50, D_MODEL, generator=gen)
        self._unembed = torch.randn(D_MODEL, VOCAB, generator=gen)  # (d_model, vocab)
        self.batch_tokens: list[int] = []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.batch_tokens.append(ids.numel())
        return self.W_E[ids] @ self._unembed  # (batch, pos, vocab)


def toy_model() -> LoadedModel:
    return LoadedModel(name="toy", bridge=ToyBridge(), tokenizer=None, hook_template="blocks.{layer}.mlp.hook_post",
                       n_layers=1, d_mlp=4, bos_id=2, mask_id=3, vocab=[f"t{i}" for i in range(VOCAB)],
                       special_ids=SPECIAL, device="cpu")


def brute_neighbours(w: torch.Tensor, token: int, n: int) -> list[int]:
    """The n nearest ordinary tokens by cosine, computed over the whole matrix at once."""
    unit = w / w.norm(dim=-1, keepdim=True)
    sims = unit @ unit[token]  # (vocab,)
    sims[list(SPECIAL) + [token]] = -torch.inf
    return sims.topk(n).indices.tolist()


def test_blocked_embedding_neighbours_are_the_nearest_ordinary_tokens(monkeypatch) -> None:
    monkeypatch.setattr(augment, "LOGIT_BUDGET", 7 * VOCAB)  # 7 query tokens at a time
    model = toy_model()
    helper = EmbeddingNeighbours(model, block=64)  # 16 blocks, the last one partial
    tokens = [100, 5, 999, 640, 100, 321, 64, 65, 66, 67, 68, 69, 70, 71]
    got = helper.substitutes([(t,) for t in tokens], [0] * len(tokens), 5)
    assert got == [brute_neighbours(model.bridge.W_E, t, 5) for t in tokens]
    assert not any(set(subs) & SPECIAL for subs in got)


def test_embedding_neighbours_asked_for_more_than_cached_are_recomputed() -> None:
    model = toy_model()
    helper = EmbeddingNeighbours(model, block=128)
    assert helper.substitutes([(100,)], [0], 2) == [brute_neighbours(model.bridge.W_E, 100, 2)]
    assert helper.substitutes([(100,)], [0], 20) == [brute_neighbours(model.bridge.W_E, 100, 20)]


def test_model_predictions_in_small_groups_match_one_pass(monkeypatch) -> None:
    rows = [(100, 200, 300), (5, 6), (100, 200, 300), (700,), (64, 65, 66, 67)]
    positions = [2, 0, 1, 0, 3]
    whole = ModelPredictions(toy_model()).substitutes(rows, positions, 4)
    monkeypatch.setattr(augment, "LOGIT_BUDGET", 4 * VOCAB)  # at most 4 tokens of logits a pass
    small = toy_model()
    grouped = ModelPredictions(small).substitutes(rows, positions, 4)
    assert grouped == whole
    assert len(small.bridge.batch_tokens) > 1
    assert max(small.bridge.batch_tokens) <= 2 * (1 + 4)  # BOS + row, rows of up to 4 tokens
    # The model proposes what its logits at the token before (BOS for the first) rank first,
    # never a control token or the token itself.
    for row, k, subs in zip(rows, positions, grouped, strict=True):
        before = row[k - 1] if k else small.bos_id
        logits = small.bridge.W_E[before] @ small.bridge._unembed  # (vocab,)
        logits[list(SPECIAL) + [row[k]]] = -torch.inf
        assert subs == logits.topk(4).indices.tolist()


def test_added_tokens_marked_special_count_as_special() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "a": 4, "b": 5},
                                         unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.add_tokens(["<unused0>", "<unused1>"], special_tokens=True)
    tokenizer.add_tokens(["[plain]"])
    unused = tokenizer.convert_tokens_to_ids(["<unused0>", "<unused1>"])
    special = _special_ids(tokenizer)
    assert {0, 1, 2, 3, *unused} <= special
    assert tokenizer.convert_tokens_to_ids("[plain]") not in special and 4 not in special


@pytest.mark.parametrize("n", [1, 3])
def test_neighbours_never_include_the_token_itself(n: int) -> None:
    helper = EmbeddingNeighbours(toy_model(), block=100)
    tokens = list(range(60, 200))
    got = helper.substitutes([(t,) for t in tokens], [0] * len(tokens), n)
    assert all(t not in subs and len(subs) == n for t, subs in zip(tokens, got, strict=True))


def test_passes_that_return_logits_hold_a_bounded_number_of_them() -> None:
    from types import SimpleNamespace

    from builder.forward import LOGIT_FLOATS, _logit_tokens

    gemma, smol = SimpleNamespace(vocab=[""] * 262_144), SimpleNamespace(vocab=[""] * 49_152)
    assert _logit_tokens(gemma, 8192) * 262_144 <= LOGIT_FLOATS < 8192 * 262_144
    assert _logit_tokens(smol, 8192) == LOGIT_FLOATS // 49_152
    assert _logit_tokens(SimpleNamespace(vocab=[""] * 100), 8192) == 8192
