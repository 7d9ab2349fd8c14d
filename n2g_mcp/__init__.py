"""n2g-mcp's MCP server and command line: neuron graphs served to AI agents.

``main`` is the ``n2g-mcp`` entry point (options, transport); ``server`` builds the query
library and registers the tools (``tools``, one module per family, and their table), resource
and prompts; ``queries`` is the library the tools call (``resolve`` and its three rooms,
``outputs`` its results, ``text`` every word an agent reads, ``limits`` the caps and defaults of
a call, ``params`` the tools' typed parameters, ``paging`` cursors, ``registry`` the models a
client may name, ``live`` the model side); its errors are ``store.errors``; ``worker`` runs slow
work with progress; ``prompts`` reads the workflow prompts (found by ``paths``); ``auth`` guards
HTTP; ``cli`` is the ``n2g`` command; ``demo`` is ``make demo``, a scripted investigation
through a real MCP client. Nothing is imported here, so ``import n2g_mcp`` stays cheap.
"""
