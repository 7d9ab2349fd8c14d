"""n2g-mcp's MCP server and command line: neuron graphs served to AI agents.

``main`` is the ``n2g-mcp`` entry point (options, transport); ``server`` registers the tools,
resource and prompts; ``queries`` is the library they call (``outputs`` its results, ``errors``
its errors, ``text`` every word an agent reads, ``paging`` cursors, ``registry`` the models a
client may name, ``live`` the model side); ``worker`` runs slow work with progress; ``auth``
guards HTTP; ``cli`` is the ``n2g`` command; ``investigate`` a scripted investigation through a
real MCP client. Nothing is imported here, so ``import n2g_mcp`` stays cheap.
"""
