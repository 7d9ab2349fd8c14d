"""What every neuron writes: the tokens its output direction promotes and suppresses, as a file.

In: what ``builder/stages/logits.py`` computed from a model's weights, once for the whole model:
for each neuron, its row of the MLP's output matrix carried through the final norm's scale and
the unembedding (the *direct path*; see that module for the approximation). Out: a compact,
versioned ``.npz`` beside the scan, ``<model>.logits.npz``, that answers without torch, for any
neuron, the ``k`` tokens whose logit it raises most and lowers most per unit of its activation,
and, the other way round, which neurons have a given token among them (``find_by_output``).

Format (version 1), one ``numpy.savez_compressed`` file:

====================  ==================  ======================================================
array                 shape, dtype        meaning
====================  ==================  ======================================================
``meta``              (bytes,) uint8      UTF-8 JSON: ``format`` ("n2g-logits"), ``version``,
                                          ``model``, ``n_layers``, ``d_mlp``, ``d_vocab``,
                                          ``top_k``, ``path`` (how the direction was carried to
                                          the logits, in words), ``excluded`` (token ids left
                                          out: special tokens), ``created``
``vocab``             (bytes,) uint8      UTF-8 JSON list: the token string of every id
``promoted_id``       (L, d, k) uint16/32 the k tokens whose logit the neuron raises most,
                                          largest first
``promoted_value``    (L, d, k) float16   the logit change per unit of raw activation, less
                                          its mean over the vocabulary
``suppressed_id``     (L, d, k) uint16/32 the k tokens it lowers most, most lowered first
``suppressed_value``  (L, d, k) float16   theirs (below the mean: negative)
====================  ==================  ======================================================

A positive activation promotes the first list; the gated MLPs of Llama and Gemma also take
negative activations, which swap the two. A loader refuses an unknown format or a newer version
with a clear error.

>>> import tempfile, numpy as np
>>> ids = np.array([[[[2, 0], [1, 2]]]]).reshape(1, 2, 2)  # (layers, neurons, k)
>>> values = np.array([[[3.0, 1.0], [2.0, 0.5]]])
>>> with tempfile.TemporaryDirectory() as d:
...     path = write_logit_file(f"{d}/m.logits.npz", model="m", vocab=[" a", " b", " c"],
...                             promoted_id=ids, promoted_value=values, suppressed_id=ids[..., ::-1],
...                             suppressed_value=-values[..., ::-1], path_note="test", excluded=0)
...     f = LogitFile(path)
...     [(t.token, t.value) for t in f.output(0, 1).promoted], f.neurons_with([1], "promoted")
([(' b', 2.0), (' c', 0.5)], [(0, 1, 0, 2.0)])
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from store.errors import ScanFileError
from store.metrics import Rounded
from store.names import file_safe, neuron_id
from store.tokens import normalize

LOGITS_FORMAT = "n2g-logits"
LOGITS_VERSION = 1
LOGITS_SUFFIX = ".logits.npz"
TOP_K = 10
"""Tokens kept each way per neuron by default: the top 10 promoted and 10 suppressed, as
Neuronpedia's feature pages show them."""
Side = Literal["promoted", "suppressed"]
"""Which of a neuron's two token lists: raised most, or lowered most."""


class LogitFileError(ScanFileError):
    """An output-token file that cannot be read (missing, damaged, another format or a newer version)."""


def logits_filename(model: str) -> str:
    """The file name of a model's output-token file in a stores directory.

    >>> logits_filename("smollm2-135m")
    'smollm2-135m.logits.npz'
    """
    return file_safe(model) + LOGITS_SUFFIX


class TokenValue(BaseModel):
    """A token and the neuron's direct effect on its logit."""

    model_config = ConfigDict(frozen=True)

    token: str
    value: Rounded = Field(description="change in the token's logit per unit of the neuron's raw activation, "
                           "through the direct path (no attention or later layer in between), relative to the "
                           "mean change over the vocabulary")


class OutputTokens(BaseModel):
    """What a neuron's output direction writes into the logits, read from the weights alone."""

    model_config = ConfigDict(frozen=True)

    promoted: list[TokenValue] = Field(description="tokens whose logit it raises most when it fires "
                                       "(positive activation), largest first")
    suppressed: list[TokenValue] = Field(description="tokens whose logit it lowers most, most lowered first")
    path: str = Field(description="how the values were computed, and what they leave out")


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)


def write_logit_file(path: str | os.PathLike[str], *, model: str, vocab: list[str], promoted_id: np.ndarray,
                     promoted_value: np.ndarray, suppressed_id: np.ndarray, suppressed_value: np.ndarray,
                     path_note: str, excluded: int) -> Path:
    """Write an output-token file (through a temporary file, so a crash leaves none half written).

    Args:
        path: the ``.logits.npz`` to write.
        model: the model's name, as its stores and scan file name it.
        vocab: the token string of every id.
        promoted_id, promoted_value: ``(L, d, k)`` raised most, largest first.
        suppressed_id, suppressed_value: ``(L, d, k)`` lowered most, most lowered first.
        path_note: how the direction was carried to the logits, for the agent to read.
        excluded: how many token ids (special tokens) were left out of the lists.
    """
    path = Path(path)
    n_layers, d_mlp, k = promoted_id.shape
    meta = {"format": LOGITS_FORMAT, "version": LOGITS_VERSION, "model": model, "n_layers": int(n_layers),
            "d_mlp": int(d_mlp), "d_vocab": len(vocab), "top_k": int(k), "path": path_note,
            "excluded": int(excluded), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    id_type = np.uint16 if len(vocab) <= np.iinfo(np.uint16).max + 1 else np.uint32
    arrays = {"meta": _json_bytes(meta), "vocab": _json_bytes(vocab),
              "promoted_id": promoted_id.astype(id_type), "promoted_value": promoted_value.astype(np.float16),
              "suppressed_id": suppressed_id.astype(id_type),
              "suppressed_value": suppressed_value.astype(np.float16)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


class LogitFile:
    """An output-token file, opened for queries: any neuron's lists, and the neurons behind a token.

    Arrays are read once when opened (a few MB); the reverse index (token -> neurons) is made on
    the first search, in a fraction of a second.

    Raises:
        LogitFileError: for a file that is missing, damaged, of another format or a newer version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                if meta.get("format") != LOGITS_FORMAT:
                    raise LogitFileError(f"{self.path}: not an n2g output-token file")
                if not isinstance(meta.get("version"), int) or meta["version"] > LOGITS_VERSION:
                    raise LogitFileError(
                        f"{self.path}: output-token format version {meta.get('version')} is newer than this "
                        f"n2g-mcp reads ({LOGITS_VERSION}); upgrade n2g-mcp or run `n2g logits` again")
                self.meta: dict[str, Any] = meta
                self.vocab: list[str] = json.loads(bytes(z["vocab"]).decode())
                self.ids = {"promoted": z["promoted_id"], "suppressed": z["suppressed_id"]}
                self.values = {"promoted": z["promoted_value"], "suppressed": z["suppressed_value"]}
        except LogitFileError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise LogitFileError(f"{self.path}: cannot read the output-token file ({e}); run `n2g logits` "
                                "to write it again") from e
        self._order: dict[str, np.ndarray] = {}
        self._keys: dict[str, list[int]] | None = None

    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, d_mlp)``."""
        layers, d, _ = self.ids["promoted"].shape
        return int(layers), int(d)

    @property
    def top_k(self) -> int:
        return int(self.ids["promoted"].shape[2])

    @property
    def path_note(self) -> str:
        return str(self.meta.get("path", ""))

    def _check(self, layer: int, neuron: int) -> None:
        n_layers, d_mlp = self.shape
        if not 0 <= layer < n_layers or not 0 <= neuron < d_mlp:
            raise IndexError(f"{neuron_id(layer, neuron)} is outside {self.model} "
                             f"({n_layers} layers x {d_mlp} neurons)")

    def tokens(self, layer: int, neuron: int, side: Side, limit: int | None = None) -> list[TokenValue]:
        """One of the neuron's lists, strongest first (at most ``limit``)."""
        self._check(layer, neuron)
        ids = self.ids[side][layer, neuron, :limit]
        values = self.values[side][layer, neuron, :limit]
        return [TokenValue(token=self.vocab[int(i)], value=float(v)) for i, v in zip(ids, values, strict=True)]

    def output(self, layer: int, neuron: int, limit: int | None = None) -> OutputTokens:
        """Both of the neuron's lists, with how they were computed."""
        return OutputTokens(promoted=self.tokens(layer, neuron, "promoted", limit),
                            suppressed=self.tokens(layer, neuron, "suppressed", limit), path=self.path_note)

    # ----------------------------------------------------------------- token -> neurons
    def token_ids(self, token: str, exact: bool = False) -> list[int]:
        """The vocabulary ids spelled ``token`` (exactly, or case- and space-insensitively)."""
        if exact:
            return [i for i, t in enumerate(self.vocab) if t == token]
        if self._keys is None:
            keys: dict[str, list[int]] = {}
            for i, t in enumerate(self.vocab):
                keys.setdefault(normalize(t), []).append(i)
            self._keys = keys
        return list(self._keys.get(normalize(token), []))

    def neurons_with(self, ids: list[int], side: Side) -> list[tuple[int, int, int, float]]:
        """Every ``(layer, neuron, rank, value)`` whose ``side`` list holds one of ``ids``.

        Reads a sorted copy of the ids (made once per side), so a token costs a binary search.
        """
        flat = self.ids[side].reshape(-1)
        if side not in self._order:
            self._order[side] = np.argsort(flat, kind="stable")
        order = self._order[side]
        sorted_ids = flat[order]
        _, d_mlp, k = self.ids[side].shape
        values = self.values[side].reshape(-1)
        found = []
        for token_id in ids:
            lo, hi = np.searchsorted(sorted_ids, [token_id, token_id + 1])
            for index in order[lo:hi]:
                layer, rest = divmod(int(index), d_mlp * k)
                neuron, rank = divmod(rest, k)
                found.append((layer, neuron, rank, float(values[index])))
        return found
