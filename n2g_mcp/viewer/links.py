"""Where the viewer's pages are: the one spelling of a model's and a neuron's page path and URL.

The MCP tools hand these URLs to an agent (``viewer_url``), so that it can give a person the page;
the viewer's routes (``n2g_mcp.viewer.app``) serve the same paths.

>>> neuron_url("http://127.0.0.1:8000/", "smollm2-135m", 16, 1425)
'http://127.0.0.1:8000/m/smollm2-135m/L16/N1425'
>>> model_path("org/tiny model")
'/m/org/tiny%20model'
"""

from __future__ import annotations

from urllib.parse import quote

from store.names import neuron_id

DEFAULT_VIEWER_URL = "http://127.0.0.1:8000"
"""Where ``n2g-mcp view`` serves by default, and so the base of the links a stdio server hands out."""


def model_path(model: str) -> str:
    """A model's page: per-layer plots and search."""
    return "/m/" + quote(model, safe="/")


def neuron_path(model: str, layer: int, neuron: int) -> str:
    """A neuron's page, e.g. ``/m/smollm2-135m/L16/N1425`` (the neuron id is its tail)."""
    return f"{model_path(model)}/{neuron_id(layer, neuron)}"


def neuron_url(base: str, model: str, layer: int, neuron: int) -> str:
    """A neuron's page under a server's base URL."""
    return base.rstrip("/") + neuron_path(model, layer, neuron)


def http_base(host: str, port: int) -> str:
    """The base URL of a server bound to ``host:port`` (an IPv6 address in brackets; a wildcard
    address, which no browser can open, as this machine's loopback).

    >>> http_base("::1", 8000), http_base("0.0.0.0", 9000)
    ('http://[::1]:8000', 'http://127.0.0.1:9000')
    """
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
