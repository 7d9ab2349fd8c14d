"""The local browser viewer: a model's and a neuron's pages over the MCP tools' query library.

``links`` spells the pages' paths (the tools hand them out as ``viewer_url``); ``data`` gathers
what a page shows from :class:`n2g_mcp.queries.Queries`; ``charts`` draws its plots as SVG;
``html`` and ``pages`` write it; ``app`` holds the routes (``n2g-mcp view``, and ``/`` of the
Streamable HTTP transport). ``static/`` holds the one style sheet and the one script; nothing is
loaded from another host. See docs/viewer.md.
"""
