"""n2g-mcp's MCP server: neuron graphs served to AI agents.

``n2g_mcp.server`` is the server (``n2g-mcp`` / ``python -m n2g_mcp``), ``n2g_mcp.service`` the
tools' logic, ``n2g_mcp.investigate`` a scripted investigation through a real MCP client. Nothing
is imported here, so ``import n2g_mcp`` stays cheap.
"""
