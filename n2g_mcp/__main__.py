"""``python -m n2g_mcp``: the MCP server, as the ``n2g-mcp`` command (see n2g_mcp/main.py)."""

from n2g_mcp.main import main

main()
