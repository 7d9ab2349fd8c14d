"""Tokenising text as the graphs see it, without torch.

The server predicts with a graph on any text; that needs the model's tokenizer but not the model.
This loads the ``tokenizer.json`` of a cached or local Hugging Face model with the ``tokenizers``
library alone. Token strings are each id decoded on its own, special tokens kept, exactly as
``builder.models.LoadedModel.vocab`` writes them into graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from store.errors import UnknownModel
from store.models import EMBEDDED, embedded_dir


@dataclass(frozen=True)
class TextTokenizer:
    """Splits text into the token strings a graph matches."""

    tokenizer: Tokenizer

    def ids(self, text: str) -> list[int]:
        """Token ids, with no special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def tokens(self, text: str) -> list[str]:
        """Token strings, each id decoded on its own."""
        ids = self.ids(text)
        return self.tokenizer.decode_batch([[i] for i in ids], skip_special_tokens=False)


def _tokenizer_file(model: str) -> Path:
    if model in EMBEDDED:
        found = embedded_dir(model) / "tokenizer.json"
        if not found.is_file():
            # The first use converts the embedded model (needs torch, once); later uses are fast.
            from builder.models import ensure_embedded

            ensure_embedded(model)
        return found
    path = Path(model).expanduser()
    found = path / "tokenizer.json" if path.is_dir() else path.parent / "tokenizer.json"
    if not found.is_file():
        raise UnknownModel(f"no tokenizer.json for model {model!r}; load the model once with `n2g build`")
    return found


@lru_cache(maxsize=8)
def load_tokenizer(model: str) -> TextTokenizer:
    """The tokenizer of a model, cached per process.

    Raises:
        UnknownModel: if no tokenizer can be found for the model here.
    """
    return TextTokenizer(Tokenizer.from_file(str(_tokenizer_file(model))))
