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
  test_hypothesis, which probe the whole live model;
- ``output_side``: find_by_output (from the weights) and output_effects (measured), what neurons
  write;
- ``exports``: export_neuron, and :func:`~n2g_mcp.tools.exports.exportable`, which gives the list
  tools their ``format`` option (CSV or JSON lines, attached as resources).

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
from n2g_mcp.text import EACH_FOR_EXPORT
from n2g_mcp.tools import exports, live, output_side, probes, scoring, stores
from n2g_mcp.tools.common import BUILDS, READ_ONLY
from n2g_mcp.tools.exports import exportable
from store.errors import N2GError


class Tool(NamedTuple):
    function: Callable[..., Any]
    """The tool: its name, parameters, description and result are the function's."""
    annotations: ToolAnnotations


TOOLS: tuple[Tool, ...] = (
    # reading the stores
    Tool(stores.list_models, READ_ONLY),
    Tool(exportable(stores.search_graphs, "results"), READ_ONLY),
    Tool(stores.get_graph, READ_ONLY),
    Tool(exportable(stores.top_activations, "examples"), READ_ONLY),
    Tool(exportable(stores.find_similar_neurons, "results"), READ_ONLY),
    Tool(stores.render_graph_dot, READ_ONLY),
    # the live model, one neuron
    Tool(live.predict_activations, READ_ONLY),
    Tool(live.build_graph, BUILDS),
    Tool(scoring.score_explanation, READ_ONLY),
    # probing the whole model
    Tool(exportable(probes.find_neurons, "results"), READ_ONLY),
    Tool(exportable(probes.find_induction_neurons, "results"), READ_ONLY),
    Tool(exportable(probes.ablate_neurons, "each", hint=EACH_FOR_EXPORT), READ_ONLY),
    Tool(probes.steer_neurons, READ_ONLY),
    Tool(probes.test_hypothesis, READ_ONLY),
    # what neurons write, and a unit's record for other tools
    Tool(exportable(output_side.find_by_output, "results"), READ_ONLY),
    Tool(output_side.output_effects, READ_ONLY),
    Tool(exports.export_neuron, READ_ONLY),
)
"""Every tool, in the order clients list them. A tool with the ``format`` option (exportable) writes
files only under the exports folder, and only when asked; it is still read-only for the stores and
the model."""


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
