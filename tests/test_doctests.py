"""The worked examples in the package's docstrings run and hold.

Only modules whose source has an example (a ``>>>`` line) are collected, and each must run at
least one: a module without examples is not counted as a pass.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import builder
import n2g_mcp
import store


def modules() -> list[str]:
    """The package modules with a worked example in their source."""
    names = []
    for package in (store, builder, n2g_mcp):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):  # runs the program when imported
                continue
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and ">>> " in Path(spec.origin).read_text(encoding="utf-8"):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", modules())
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has '>>> ' in its source but no example doctest runs"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
