"""The MCP tools: plain functions over the query library, registered from one table.

Each tool is a module-level function whose first argument is the query library
(:class:`n2g_mcp.queries.Queries`) and whose other arguments are typed, strict parameters (no
``true`` for a number, no ``"yes"`` for a flag) described for the agent; its docstring is the
tool's description, and it returns the library's result model with a short text summary. By
family:

- ``stores``: list_models, search_graphs, get_graph, top_activations, find_similar_neurons,
  render_graph_dot (and the ``graph://`` resource), answered from the stores alone;
- ``live``: predict_activations, build_graph, which run the live model on one neuron;
- ``scoring``: score_explanation, which scores an explanation in words against the live neuron;
- ``probes``: find_neurons, find_induction_neurons, ablate_neurons, steer_neurons,
  test_hypothesis, which probe the whole live model.

:data:`TOOLS` lists them in the order clients see them, with their annotations;
:func:`register` adds them to a server over one library, and :func:`bind` is the one place
where the library's errors become errors the agent reads. Called directly, a tool needs no
server: ``search_graphs(Queries(Path("stores")), activating=[" except"])``.
"""

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from n2g_mcp.queries import Queries
from n2g_mcp.tools import live, probes, scoring, stores
from n2g_mcp.tools.common import BUILDS, READ_ONLY
from store.errors import N2GError


class Tool(NamedTuple):
    function: Callable[..., Any]
    """The tool: its name, parameters, description and result are the function's."""
    annotations: ToolAnnotations


TOOLS: tuple[Tool, ...] = (
    # reading the stores
    Tool(stores.list_models, READ_ONLY),
    Tool(stores.search_graphs, READ_ONLY),
    Tool(stores.get_graph, READ_ONLY),
    Tool(stores.top_activations, READ_ONLY),
    Tool(stores.find_similar_neurons, READ_ONLY),
    Tool(stores.render_graph_dot, READ_ONLY),
    # the live model, one neuron
    Tool(live.predict_activations, READ_ONLY),
    Tool(live.build_graph, BUILDS),
    Tool(scoring.score_explanation, READ_ONLY),
    # probing the whole model
    Tool(probes.find_neurons, READ_ONLY),
    Tool(probes.find_induction_neurons, READ_ONLY),
    Tool(probes.ablate_neurons, READ_ONLY),
    Tool(probes.steer_neurons, READ_ONLY),
    Tool(probes.test_hypothesis, READ_ONLY),
)
"""Every tool, in the order clients list them."""


@contextmanager
def _raising(error: type[Exception], q: Queries) -> Iterator[None]:
    """Re-raise the library's errors (:class:`store.errors.N2GError`) as ``error``, with the same
    message as a client may read it (``Queries.shown``: folders named, not shown, where the
    operator keeps them hidden)."""
    try:
        yield
    except N2GError as exc:
        raise error(q.shown(str(exc))) from exc


def bind(function: Callable[..., Any], q: Queries,
         error: type[Exception] = ToolError) -> Callable[..., Any]:
    """``function`` as the server calls it: ``q`` passed as its first argument, the rest of its
    signature (which the SDK reads for the input schema) kept, and the library's errors raised
    as ``error``, whose message the agent reads (``Queries.shown``)."""
    signature = inspect.signature(function, eval_str=True)
    parameters = list(signature.parameters.values())[1:]

    if inspect.iscoroutinefunction(function):
        async def call(**arguments: Any) -> Any:
            with _raising(error, q):
                return await function(q, **arguments)
    else:
        def call(**arguments: Any) -> Any:
            with _raising(error, q):
                return function(q, **arguments)

    call.__name__ = call.__qualname__ = function.__name__
    call.__module__, call.__doc__ = function.__module__, function.__doc__
    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return call


def register(server: MCPServer, q: Queries) -> None:
    """Add every tool of :data:`TOOLS` to ``server``, over the query library ``q``."""
    for function, annotations in TOOLS:
        server.tool(annotations=annotations, description=inspect.cleandoc(function.__doc__ or ""))(bind(function, q))
