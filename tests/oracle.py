"""A rule-defined "model" whose neurons we understand completely, for oracle tests.

It plugs into ``builder.models.LoadedModel`` in place of a TransformerBridge, so the real scan,
prune, saliency, augment, fit and evaluate stages run on it unchanged. Tokens are words (with
their leading space) and punctuation. Its single layer has these neurons:

- ``EXCEPT`` fires (1.0) on " except" when " everyone" stands within 3 tokens before it.
- ``REPEAT`` fires (1.0) on any token that already appeared earlier in the sequence.
- ``TOKEN`` fires on " the" (0.8) whatever the context.
- ``DEAD`` never fires.
- ``HALF`` fires on " sun" right after " red" (1.0, its maximum), and on " home" at 0.8 when
  " went" stands anywhere before it, else at 0.45. Without its distant context " home" keeps more
  than half of its 0.8, so pruning cuts the context away, and the pruned text alone stays below
  firing.
- ``BIGRAM`` fires (1.0) on the second token of any bigram that already appeared earlier in the
  sequence ("a b ... a [b]", the induction pattern), special tokens included (the BOS stands
  only at position 0, so no bigram holding it repeats).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import orjson
import torch

from builder.config import BuildConfig, EvalConfig, ScanConfig
from builder.models import LoadedModel

EXCEPT, REPEAT, TOKEN, DEAD, HALF, BIGRAM = 0, 1, 2, 3, 4, 5
ORACLE_CONFIG = BuildConfig(scan=ScanConfig(window=16, top_k=60, random_windows=10),
                            eval=EvalConfig(top=40, train=20, extra_train=20), neuron_batch=2)
"""The build settings the oracle tests use: short windows, 40 test windows, small batches."""
D_MLP = 6
BOS, MASK = "<bos>", "<mask>"
_SPLIT = re.compile(r" ?\w+|[^\w\s]")

WORDS = (" everyone", " except", " the", " cat", " dog", " sat", " on", " mat", " went", " home",
         " me", " him", " here", " is", " a", " big", " small", " red", " blue", " house", " tree",
         " ran", " and", " but", " was", " saw", " old", " new", " car", " road", " sun", " rain",
         "The", "Everyone", "We", ".", ",")


class WordTokenizer:
    """Splits text into words with their leading space, and punctuation."""

    unk_token = MASK
    pad_token_id = None
    eos_token_id = None
    bos_token_id = 0

    def __init__(self, words: tuple[str, ...] = WORDS) -> None:
        self.vocab = [BOS, MASK, *words]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk_token_id = self.index[MASK]
        self.all_special_ids = [0, 1]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [self.index.get(t, self.unk_token_id) for t in _SPLIT.findall(text)]}

    def convert_tokens_to_ids(self, tokens: list[str] | str):
        if isinstance(tokens, str):
            return self.index.get(tokens, self.unk_token_id)
        return [self.index.get(t, self.unk_token_id) for t in tokens]


class RuleBridge:
    """Computes the rule neurons' activations; mimics the bridge calls the builder makes."""

    def __init__(self, tokenizer: WordTokenizer, d_model: int = 8) -> None:
        self.tok = tokenizer
        gen = torch.Generator().manual_seed(0)
        self.W_E = torch.randn(len(tokenizer.vocab), d_model, generator=gen)
        # Every hook reads the rule neurons (run_with_hooks hands each the same activations): the
        # MLP's input and output are named too, so dictionaries on them (sparsify's layers.0.mlp,
        # a transcoder) read the rule neurons as well.
        self.hook_dict = {"blocks.0.mlp.hook_post": None, "blocks.0.hook_mlp_out": None, "blocks.0.mlp.hook_in": None}

    def activations(self, ids: torch.Tensor) -> torch.Tensor:
        """``(batch, pos, D_MLP)`` activations of the rule neurons."""
        t = self.tok.index
        acts = torch.zeros(*ids.shape, D_MLP)
        for b, row in enumerate(ids.tolist()):
            seen: set[int] = set()
            bigrams: set[tuple[int, int]] = set()
            for p, token in enumerate(row):
                if p > 0 and (row[p - 1], token) in bigrams:
                    acts[b, p, BIGRAM] = 1.0
                window = row[max(0, p - 3):p]
                if token == t[" except"] and t[" everyone"] in window:
                    acts[b, p, EXCEPT] = 1.0
                if p > 0 and token in seen and token not in (0, 1):
                    acts[b, p, REPEAT] = 1.0
                if token == t[" the"]:
                    acts[b, p, TOKEN] = 0.8
                if token == t[" sun"] and p > 0 and row[p - 1] == t[" red"]:
                    acts[b, p, HALF] = 1.0
                if token == t[" home"]:
                    acts[b, p, HALF] = 0.8 if t[" went"] in row[:p] else 0.45
                if p > 0:  # the BOS at position 0 is not part of the text
                    seen.add(token)
                    bigrams.add((row[p - 1], token))
        return acts

    def run_with_hooks(self, ids: torch.Tensor, fwd_hooks, stop_at_layer: int | None = None, **_):
        acts = self.activations(ids)
        for name, hook in fwd_hooks:
            hook(acts, name)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return torch.randn(*ids.shape, len(self.tok.vocab), generator=gen)  # (batch, pos, vocab)


def rule_model() -> LoadedModel:
    """The rule-defined model as the builder sees a loaded model."""
    tok = WordTokenizer()
    return LoadedModel(
        name="rule-model", bridge=RuleBridge(tok), tokenizer=tok,
        hook_template="blocks.{layer}.mlp.hook_post", n_layers=1, d_mlp=D_MLP, bos_id=0,
        mask_id=tok.unk_token_id, vocab=list(tok.vocab), special_ids=frozenset({0, 1}),
        device="cpu",
    )


def _sentence(rng: random.Random) -> str:
    filler = [w for w in WORDS if w.startswith(" ") and w not in (" everyone", " except")]
    kind = rng.random()
    words = [rng.choice(filler) for _ in range(rng.randint(3, 7))]
    if kind < 0.35:  # the pattern: " everyone" within 3 tokens before " except"
        gap = rng.randint(0, 2)
        words[-1:] = [" everyone", *[rng.choice(filler) for _ in range(gap)], " except",
                      rng.choice(filler)]
    elif kind < 0.5:  # " except" with " everyone" too far before it, or absent
        words += [" except", rng.choice(filler)]
    return "We" + "".join(words) + "."


def _documents(documents: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(12)) for _ in range(documents)]


def write_corpus(path: Path, documents: int = 120, seed: int = 0) -> Path:
    """A synthetic corpus for the rule model: short sentences, some with the EXCEPT pattern."""
    path.write_text("\n".join(_documents(documents, seed)))
    return path


def write_documents(path: Path, documents: int = 120, seed: int = 0) -> Path:
    """:func:`write_corpus`'s text as JSON lines, one document a line, so that the held-out split
    (by document) holds some out."""
    path.write_bytes(b"\n".join(orjson.dumps({"text": t, "source": f"oracle/{i}"})
                                for i, t in enumerate(_documents(documents, seed))))
    return path


def rule_activations(model: LoadedModel, text: str, neuron: int) -> np.ndarray:
    """What the rule neuron truly does on a text (the oracle's ground truth)."""
    ids = torch.tensor([[model.bos_id, *model.encode(text)]])
    return model.bridge.activations(ids)[0, 1:, neuron].numpy()


def oracle_build(model: LoadedModel, root: Path, units: list[int], store_name: str) -> tuple[Path, Path]:
    """Build ``units`` of layer 0 of a rule model (or a dictionary's view of it) over a fresh
    synthetic corpus in ``root``, with :data:`ORACLE_CONFIG`; returns ``(store, corpus)``."""
    from builder.run.runner import BuildSource, run_build

    corpus = write_corpus(root / "corpus.txt")
    store = root / store_name
    run_build(model, [0], units, store, ORACLE_CONFIG, BuildSource(model, ORACLE_CONFIG, corpus=corpus))
    return store, corpus
