"""What every tool module shares: its answer's shape, and descriptions that quote the limits.

A tool answers with :func:`result`: the short text an agent reads (``n2g_mcp.text``) and the
structured content behind it (the library's result model, which is also the tool's
``outputSchema``). :func:`describe` fills the limits a docstring quotes, so the description
states the caps the library enforces, named once in ``n2g_mcp.limits``.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from mcp_types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import BaseModel

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
"""A tool that only reads (the stores, or the model without changing it)."""
BUILDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
"""A tool that adds to the stores, and answers the same when called again."""

F = TypeVar("F", bound=Callable[..., Any])


def result(summary: str, output: BaseModel, extra: list[ContentBlock] | None = None) -> CallToolResult:
    """A tool result: the short text an agent reads, and the structured content behind it."""
    return CallToolResult(content=[TextContent(type="text", text=summary), *(extra or [])],
                          structured_content=output.model_dump(mode="json"))


def describe(**values: object) -> Callable[[F], F]:
    """Fill the ``{names}`` of a tool's docstring with ``values`` (the limits it quotes)."""

    def fill(fn: F) -> F:
        fn.__doc__ = (fn.__doc__ or "").format(**values)
        return fn

    return fill
