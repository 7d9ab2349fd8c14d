"""The errors the query library raises: each message is written for the agent and says what to
call next. ``n2g_mcp.server`` turns every one into an MCP tool error in one place; the command
line can print them as they are.
"""

from __future__ import annotations


class QueryError(Exception):
    """A request that cannot be answered as asked; the message says why and what to do next."""


class BadArgument(QueryError, ValueError):
    """An argument out of range, malformed, or inconsistent with another."""


class NotFound(QueryError, LookupError):
    """A model, store or graph that is not here."""


class Unavailable(QueryError):
    """Work this installation or this model cannot do (no builder extra, a model that fails to load)."""


class Cancelled(QueryError):
    """Work stopped because the caller cancelled it; nothing half-done was kept."""
