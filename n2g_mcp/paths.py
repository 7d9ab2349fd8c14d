"""Where the command line and the server find stores and prompts.

Run from a clone of the repository, both are the clone's own ``stores/`` and ``prompts/``.
Installed from a wheel (pip, pipx, uvx; docs/install.md), the prompts come with the package
(``<prefix>/share/n2g-mcp/prompts``), and the stores are where ``--stores`` or ``$N2G_STORES``
say, else the user's data folder ``$XDG_DATA_HOME/n2g-mcp/stores`` (``~/.local/share/...``),
where graphs built by that server or by ``n2g build`` go too. The wheel carries no stores.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STORES_ENV = "N2G_STORES"


def from_checkout() -> bool:
    """Whether this code runs from a clone of the repository (an editable install included)
    rather than from an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "n2g_mcp").is_dir()


def user_stores_dir() -> Path:
    """The installed server's default stores folder: ``$XDG_DATA_HOME/n2g-mcp/stores``."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "n2g-mcp" / "stores"


def default_stores_dir() -> Path:
    """``$N2G_STORES``, else the ``stores/`` folder of this checkout, else (installed from a
    wheel) :func:`user_stores_dir`."""
    if os.environ.get(STORES_ENV):
        return Path(os.environ[STORES_ENV])
    return REPO_ROOT / "stores" if from_checkout() else user_stores_dir()


def installed_data(name: str) -> Path:
    """``<prefix>/share/n2g-mcp/<name>``, where a wheel installs its data files (the
    environment's prefix; for ``pip install --user``, the user base)."""
    places = [Path(sys.prefix), Path(site.getuserbase())]
    found = [p / "share" / "n2g-mcp" / name for p in places]
    return next((p for p in found if p.is_dir()), found[0])


def prompts_dir() -> Path:
    """The agent workflows: ``prompts/`` of this checkout, else where a wheel installed them."""
    checkout = REPO_ROOT / "prompts"
    if checkout.is_dir():
        return checkout
    return installed_data("prompts")
