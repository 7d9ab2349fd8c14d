"""Where the command line and the server find stores and prompts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STORES_ENV = "N2G_STORES"


def default_stores_dir() -> Path:
    """``$N2G_STORES``, else the ``stores/`` folder of this checkout."""
    return Path(os.environ.get(STORES_ENV) or REPO_ROOT / "stores")


def prompts_dir() -> Path:
    """The agent workflows: ``prompts/`` of this checkout, else where a wheel installed them."""
    checkout = REPO_ROOT / "prompts"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "n2g-mcp" / "prompts"
