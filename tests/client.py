"""Calling a server's tools through the MCP SDK's in-memory client, as the server tests do."""

from __future__ import annotations

from mcp import Client


async def call(server, tool: str, **args):
    """One tool call on a fresh in-memory session."""
    async with Client(server) as client:
        return await client.call_tool(tool, args)


async def ok(server, tool: str, **args) -> dict:
    """A call that must succeed with a text summary; its structured content."""
    result = await call(server, tool, **args)
    assert not result.is_error, result.content[0].text
    assert result.content[0].text.strip(), "every result carries a text summary"
    return result.structured_content


async def error(server, tool: str, **args) -> str:
    """A call that must fail; the message the agent reads."""
    result = await call(server, tool, **args)
    assert result.is_error, result.structured_content
    return result.content[0].text
