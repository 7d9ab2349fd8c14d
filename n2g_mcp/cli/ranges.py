"""Neuron and layer selections as the command line and the benchmarks write them."""

from __future__ import annotations

import random
from collections.abc import Sequence

from store.errors import BadArgument


def parse_range(text: str, upper: int | None = None) -> list[int]:
    """Parse ``"0-63"``, ``"1,5,9-11"`` or ``"all"`` (needs ``upper``) into sorted indices.

    >>> parse_range("1,5,9-11")
    [1, 5, 9, 10, 11]
    """
    if text.strip().lower() == "all":
        if upper is None:
            raise BadArgument("'all' needs a model whose size is known")
        return list(range(upper))
    values: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError
            values.update(range(first, last + 1))
    except ValueError:
        raise BadArgument(f"bad range {text!r}: use forms like 0-63, 1,5,9-11 or all") from None
    return sorted(values)


def sample(neurons: Sequence[int], count: int, seed: int = 0) -> list[int]:
    """A reproducible random sample of neurons, sorted.

    >>> sample(range(10), 3) == sample(range(10), 3)
    True
    """
    if count <= 0:
        raise BadArgument("--sample must be a positive number of neurons")
    pool = list(neurons)
    return sorted(random.Random(seed).sample(pool, min(count, len(pool))))
