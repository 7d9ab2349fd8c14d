"""``python -m n2g_mcp``: the MCP server, as the ``n2g-mcp`` command (see n2g_mcp/server.py)."""

from n2g_mcp.server import main

main()
