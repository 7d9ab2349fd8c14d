"""The n2g-mcp MCP server: the tools, a resource and the prompts over the query library.

In: a stores directory (or a :class:`n2g_mcp.queries.Queries` made already) and the prompt files
of ``prompts/``. Out: an :class:`MCPServer` with the tools of ``n2g_mcp.tools`` (list_models,
search_graphs, get_graph, top_activations, find_similar_neurons, render_graph_dot,
predict_activations, build_graph, the whole-model probes find_neurons,
find_induction_neurons, ablate_neurons, steer_neurons, test_hypothesis, and the output side
find_by_output, output_effects, export_neuron), the resources ``graph://{model}/{layer}/{neuron}``
and ``export://{name}`` (answers written as files), and the workflow prompts.

The tools themselves, their table and the one place the library's errors become tool errors are
in ``n2g_mcp.tools``; this module only builds the library and registers. Argument errors are
reworded here for the agent (:class:`_Server`). Transports and options are chosen by the entry
point (``n2g_mcp.main``), not here.
"""

from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import ValidationError

from n2g_mcp import text as wording
from n2g_mcp.live import LiveBackend
from n2g_mcp.paths import prompts_dir as default_prompts_dir
from n2g_mcp.prompts import load_prompts
from n2g_mcp.queries import Queries
from n2g_mcp.registry import ServedModels
from n2g_mcp.tools import bind, exports, register, stores


class _Server(MCPServer):
    """MCPServer whose argument errors read as sentences for the agent, not validator dumps."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(wording.bad_arguments(name, cause.errors(include_url=False))) from cause
            raise


def create_server(stores_dir: Path, *, live: LiveBackend | None = None, models: ServedModels | None = None,
                  prompts_dir: Path | None = None, queries: Queries | None = None,
                  show_paths: bool = True, viewer_url: str | None = None) -> MCPServer:
    """The MCP server over a stores directory.

    Args:
        stores_dir: where the stores are read from and built graphs appended to.
        live: the model side; the real builder by default (loaded lazily, on the first build or
            comparison). Tests pass a double.
        models: the models clients may name; the embedded default alone by default.
        prompts_dir: the markdown prompt files to serve (default: the repository's ``prompts/``).
        queries: the query library to serve, where the caller made one (then the three
            arguments above and ``show_paths`` are not used).
        show_paths: whether answers and errors show the server's folders (to a local user);
            where not, they name them ("the server's stores folder").
        viewer_url: the viewer's base URL, which answers about one neuron link to (``viewer_url``);
            None: no links.
    """
    q = queries if queries is not None else Queries(Path(stores_dir), live, models, show_paths=show_paths,
                                                    viewer_url=viewer_url)
    server = _Server("n2g-mcp", instructions=wording.INSTRUCTIONS)
    register(server, q)
    server.resource("graph://{model}/{layer}/{neuron}", mime_type="application/json",
                    description=stores.graph_resource.__doc__)(bind(stores.graph_resource, q, ResourceNotFoundError))
    server.resource("export://{name}", mime_type="text/plain",
                    description=exports.export_resource.__doc__)(bind(exports.export_resource, q, ResourceNotFoundError))
    for prompt in load_prompts(prompts_dir or default_prompts_dir()):
        server.add_prompt(prompt)
    return server
