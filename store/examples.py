"""A graph's examples, as text or as references into the model's scan file (store format 2).

In: a graph's stored examples, each an :class:`Example` (the window's tokens as text, format 1) or
a reference (format 2): :class:`ExampleRef` for a top example (scan window, pivot position,
activation), :class:`PrunedRef` for a pruned example (a span of a scan window ending at its pivot,
with the tokens' importances). Out: text examples that read exactly as the text ones did.

A top example is its window cut to :data:`EXAMPLE_BEFORE` tokens before the pivot and
:data:`EXAMPLE_AFTER` after, so a reference records only the whole window and the pivot::

    ref = ExampleRef(window=812, pivot=40, activation=3.21, split="test")
    resolve([ref], scan)            # [Example(tokens=<window 812, tokens 16..48>, pivot=24, ...)]

:class:`Referrer` goes the other way (``n2g store compact --scan-file``, and a build whose scan
file serves its windows): it finds each text example in the scan's windows and returns a
reference only where resolving it gives back the very same tokens and pivot, so a store converted
reads as it did; an example it cannot find stays text.

The store header's ``scan`` (:class:`ScanRef`) names the scan file and its ``windows_key``;
:func:`scan_problem` says why a scan at hand cannot serve a store's references (missing, or made
over other windows), so that the examples are reported missing rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    model_serializer,
    model_validator,
)

EXAMPLE_BEFORE, EXAMPLE_AFTER = 24, 8
"""Tokens a top example keeps before and after its pivot (the format fixes them: a reference
stores the whole window, and reads as this cut)."""

Split = Literal["train", "test"]
ACTIVATION_DECIMALS = 3
"""Decimals a reference keeps of its raw activation: the displayed value needs no more, and a
fourth decimal cost 3% of a compressed store line."""


class Example(BaseModel):
    """A token window with its activating (pivot) token marked."""

    tokens: list[str] = Field(description="the window's tokens as text")
    pivot: int = Field(ge=0, description="index in tokens of the activating token")
    activation: FiniteFloat = Field(description="the neuron's raw activation on the pivot token")
    split: Split | None = Field(default=None, description="which half of the top examples it belongs to")
    importances: list[FiniteFloat] | None = Field(
        default=None, description="saliency of each token for the pivot's activation"
    )


def _from_row(fields: tuple[str, ...]) -> Callable[[Any], Any]:
    """A before-validator reading a reference stored as a row (a JSON array, in ``fields`` order)."""

    def read(value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != len(fields):
                raise ValueError(f"a reference row has {len(fields)} fields ({', '.join(fields)}), not {len(value)}")
            return dict(zip(fields, value, strict=True))
        return value

    return read


def _to_row(ref: ExampleRef | PrunedRef) -> list[Any]:
    """A reference as its stored row, the activation rounded to :data:`ACTIVATION_DECIMALS`."""
    return [round(ref.activation, ACTIVATION_DECIMALS) if name == "activation" else getattr(ref, name)
            for name in ref.ROW]


class ExampleRef(BaseModel):
    """A top example as a window of the scan file: reads as the window cut around the pivot.

    Stored as the row ``[window, pivot, activation, split]``: rows, as the trie's, because 50 of
    them a graph would repeat their keys 50 times (a tenth of a compressed line).
    """

    ROW: ClassVar[tuple[str, ...]] = ("window", "pivot", "activation", "split")

    window: int = Field(ge=0, description="index of the window in the scan file's windows")
    pivot: int = Field(ge=0, description="position of the activating token in the window")
    activation: FiniteFloat = Field(description="the neuron's raw activation on the pivot token")
    split: Split | None = None

    _row = model_validator(mode="before")(staticmethod(_from_row(ROW)))

    @model_serializer
    def _as_row(self) -> list[Any]:
        return _to_row(self)


class PrunedRef(BaseModel):
    """A pruned example as a span of a scan window; the pruned text ends at its pivot.

    Stored as the row ``[window, start, end, activation, split, importances]``.
    """

    ROW: ClassVar[tuple[str, ...]] = ("window", "start", "end", "activation", "split", "importances")

    window: int = Field(ge=0, description="index of the window in the scan file's windows")
    start: int = Field(ge=0, description="first position of the span in the window")
    end: int = Field(ge=1, description="one past the last position; the pivot is end - 1")
    activation: FiniteFloat = Field(description="the neuron's raw activation on the pruned text's pivot")
    split: Split | None = None
    importances: list[FiniteFloat] | None = Field(default=None, description="saliency of each token of the span")

    _row = model_validator(mode="before")(staticmethod(_from_row(ROW)))

    @model_serializer
    def _as_row(self) -> list[Any]:
        return _to_row(self)

    @model_validator(mode="after")
    def _span(self) -> PrunedRef:
        if self.end <= self.start:
            raise ValueError(f"an empty span ({self.start}, {self.end})")
        if self.importances is not None and len(self.importances) != self.end - self.start:
            raise ValueError(f"{len(self.importances)} importances for a span of {self.end - self.start} tokens")
        return self


class ScanRef(BaseModel):
    """The scan file a store's references point into (its header's ``scan``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the scan file's name, looked for beside the store")
    windows_key: str = Field(description="the scan's windows_key: a scan over other windows is refused")


class ScanWindows(Protocol):
    """What resolving needs of a scan file (``store.scanfile.ScanFile`` has it)."""

    windows: np.ndarray
    vocab: list[str]
    meta: dict


class UnresolvedExamples(ValueError):
    """References a scan cannot resolve (missing, made over other windows, or out of its range)."""


def scan_ref(scan: ScanWindows, name: str) -> ScanRef:
    """The header reference to a scan file of this name."""
    return ScanRef(name=name, windows_key=str(scan.meta["windows_key"]))


def scan_problem(ref: ScanRef | None, scan: ScanWindows | None) -> str | None:
    """Why ``scan`` cannot resolve references written against ``ref``, or None where it can."""
    if ref is None:
        return "its store's header names no scan file"
    if scan is None:
        return f"the scan file {ref.name} is not beside the store"
    key = scan.meta.get("windows_key")
    if key != ref.windows_key:
        return (f"the scan file {ref.name} was made over other windows (windows_key {key}, the store "
                f"was written against {ref.windows_key})")
    return None


def _window(scan: ScanWindows, index: int) -> np.ndarray:
    if index >= len(scan.windows):
        raise UnresolvedExamples(f"window {index} is past the scan's {len(scan.windows)} windows")
    return scan.windows[index]


def resolve_one(item: Example | ExampleRef | PrunedRef, scan: ScanWindows) -> Example:
    """One example as text.

    Raises:
        UnresolvedExamples: for a reference outside the scan's windows.
    """
    if isinstance(item, Example):
        return item
    row = _window(scan, item.window)
    if isinstance(item, ExampleRef):
        if item.pivot >= len(row):
            raise UnresolvedExamples(f"pivot {item.pivot} is past window {item.window} ({len(row)} tokens)")
        start, end = max(0, item.pivot - EXAMPLE_BEFORE), min(len(row), item.pivot + EXAMPLE_AFTER + 1)
        return Example(tokens=[scan.vocab[t] for t in row[start:end]], pivot=item.pivot - start,
                       activation=item.activation, split=item.split)
    if item.end > len(row):
        raise UnresolvedExamples(f"span ({item.start}, {item.end}) is past window {item.window} ({len(row)} tokens)")
    return Example(tokens=[scan.vocab[t] for t in row[item.start:item.end]], pivot=item.end - item.start - 1,
                   activation=item.activation, split=item.split, importances=item.importances)


def has_refs(items: Sequence[Example | ExampleRef | PrunedRef]) -> bool:
    """Whether any example is a reference (needs a scan file to be read)."""
    return any(not isinstance(item, Example) for item in items)


def resolve(items: Sequence[Example | ExampleRef | PrunedRef], scan: ScanWindows | None,
            problem: str | None = None) -> list[Example]:
    """The examples as text, in their order.

    Args:
        items: stored examples, text or references.
        scan: the scan file the references point into (None where there is none).
        problem: why ``scan`` cannot serve them (:func:`scan_problem`), where known.

    Raises:
        UnresolvedExamples: where some example is a reference and the scan cannot resolve it.
    """
    if not has_refs(items):
        return list(items)  # type: ignore[arg-type]
    if problem is not None or scan is None:
        raise UnresolvedExamples(problem or "no scan file is at hand")
    return [resolve_one(item, scan) for item in items]


# --------------------------------------------------------------------------- text -> references
class Referrer:
    """Turns text examples into references into one scan file's windows (see the module docstring).

    Args:
        scan: the scan file (its windows and vocabulary).
    """

    def __init__(self, scan: ScanWindows) -> None:
        self.scan = scan
        # Token strings are not unique in every vocabulary (SmolLM2: 49,152 ids, 48,843 strings):
        # compare the first id of each string, so that equal texts compare equal.
        first: dict[str, int] = {}
        canon = np.array([first.setdefault(t, i) for i, t in enumerate(scan.vocab)], dtype=np.int64)
        self._first = first
        self._rows = canon[np.asarray(scan.windows, dtype=np.int64)]  # (n_windows, window)

    def _ids(self, tokens: Sequence[str]) -> np.ndarray | None:
        ids = [self._first.get(t) for t in tokens]
        return None if not ids or any(i is None for i in ids) else np.array(ids, dtype=np.int64)

    def _pool(self, candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The candidate windows' ids (those inside the scan) and their rows, gathered once."""
        if candidates is None:
            return None
        own = np.asarray(candidates, dtype=np.int64)
        own = own[(own >= 0) & (own < len(self._rows))]
        return own, self._rows[own]

    @staticmethod
    def _spans(ids: np.ndarray, anchor: int, windows: np.ndarray | None,
               rows: np.ndarray) -> Iterator[tuple[int, int]]:
        """``(window, start)`` of each place the ids occur in ``rows`` (the rows of ``windows``;
        None: every window), in order.

        Candidates are the places of one token (``ids[anchor]``: the pivot, the rarest in
        practice), then whole spans are compared at once: a few comparisons, not one a start.
        """
        width, m = rows.shape[1], len(ids)
        if m > width or len(rows) == 0:
            return
        c, start = np.nonzero(rows[:, anchor:width - m + 1 + anchor] == ids[anchor])  # (hits,)
        whole = (rows[c[:, None], start[:, None] + np.arange(m)] == ids).all(axis=1)  # (hits,)
        for i in np.flatnonzero(whole):
            yield int(c[i] if windows is None else windows[c[i]]), int(start[i])

    def _find(self, ids: np.ndarray, anchor: int, pool: tuple[np.ndarray, np.ndarray] | None,
              fits: Callable[[int], bool]) -> tuple[int, int] | None:
        """The first ``(window, start)`` holding the ids where ``fits(start)``: the neuron's own top
        windows first (where its examples come from), then every window."""
        for windows, rows in ([pool] if pool is not None else []) + [(None, self._rows)]:
            for w, s in self._spans(ids, anchor, windows, rows):
                if fits(s):
                    return w, s
        return None

    def example(self, ex: Example, pool: tuple[np.ndarray, np.ndarray] | None = None) -> ExampleRef | None:
        """A top example as a reference, or None where no window cut as the format cuts gives it."""
        ids = self._ids(ex.tokens)
        if ids is None or ex.importances is not None or ex.pivot >= len(ids):
            return None
        width = self._rows.shape[1]

        def fits(start: int) -> bool:
            p = start + ex.pivot
            return max(0, p - EXAMPLE_BEFORE) == start and min(width, p + EXAMPLE_AFTER + 1) == start + len(ids)

        found = self._find(ids, ex.pivot, pool, fits)
        if found is None:
            return None
        return ExampleRef(window=found[0], pivot=found[1] + ex.pivot, activation=ex.activation, split=ex.split)

    def pruned(self, ex: Example, pool: tuple[np.ndarray, np.ndarray] | None = None) -> PrunedRef | None:
        """A pruned example (text ending at its pivot) as a span, or None where no window holds it."""
        ids = self._ids(ex.tokens)
        if ids is None or ex.pivot != len(ids) - 1:
            return None
        found = self._find(ids, ex.pivot, pool, lambda start: True)
        if found is None:
            return None
        w, s = found
        return PrunedRef(window=w, start=s, end=s + len(ids), activation=ex.activation, split=ex.split,
                         importances=ex.importances)

    def refer(self, examples: Sequence[Example | ExampleRef | PrunedRef],
              pruned: Sequence[Example | ExampleRef | PrunedRef],
              candidates: np.ndarray | None = None) -> tuple[list, list, int]:
        """Both lists with every text example the scan holds made a reference; the number left text.

        Args:
            examples, pruned: a graph's stored examples (references already are kept).
            candidates: window indices to look in first (the neuron's top windows in the scan).
        """
        kept, pool = 0, self._pool(candidates)
        out_examples: list[Example | ExampleRef | PrunedRef] = []
        for ex in examples:
            ref = self.example(ex, pool) if isinstance(ex, Example) else ex
            kept += ref is None
            out_examples.append(ex if ref is None else ref)
        out_pruned: list[Example | ExampleRef | PrunedRef] = []
        for ex in pruned:
            ref = self.pruned(ex, pool) if isinstance(ex, Example) else ex
            kept += ref is None
            out_pruned.append(ex if ref is None else ref)
        return out_examples, out_pruned, kept
