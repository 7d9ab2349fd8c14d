"""Answers other tools can take: the ``format`` option of the list tools, export_neuron, and the
``export://`` resource.

:func:`exportable` gives a list tool one more parameter, ``format`` ('text', 'csv' or 'jsonl'):
with 'csv' or 'jsonl' the answer is the same, and its rows (the list field named, such as
``results``) are also written under the exports folder (``n2g_mcp.exports.exports_dir``) and
attached twice: as a resource link (``export://<file>``, readable through this server) and as an
embedded resource holding the text, for clients that do not follow links. The columns are the row
type's field names, so they are the answer's own keys. :func:`export_neuron` writes one unit's
record in a Neuronpedia-like shape the same way. Called directly, these need no server.
"""

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

from mcp_types import CallToolResult, ContentBlock, EmbeddedResource, ResourceLink, TextContent, TextResourceContents
from pydantic import BaseModel, Field

from n2g_mcp import text as wording
from n2g_mcp.exports import MIME, ExportFormat, export_name, export_path, render, write_export
from n2g_mcp.limits import EXPORT_WINDOWS, MAX_LIMIT
from n2g_mcp.output_results import NeuronExport
from n2g_mcp.params import Count, Layer, ModelName, UnitsName, unit_model, Neuron
from n2g_mcp.queries import Queries
from n2g_mcp.tools.common import result

FormatParam = Annotated[ExportFormat, Field(
    description="'text' answers as usual; 'csv' or 'jsonl' also writes the rows (columns: the rows' field names) "
    "to a file under the server's exports folder and attaches it as a resource (a link, export://<file>, and the "
    "text itself), for a notebook, a spreadsheet or another tool.")]


def _written(q: Queries, name: str, body: str, mime: str) -> tuple[str, list[ContentBlock]]:
    """Write an export under the exports folder: where it lies, as this client may read it
    (``Queries.shown``: no server folder over HTTP unless the operator asks), and the content that
    attaches it (a link to read it again, and its text embedded)."""
    shown = q.shown(str(write_export(name, body)))
    uri = f"export://{name}"
    return shown, [
        ResourceLink(type="resource_link", uri=uri, name=name, mime_type=mime, size=len(body.encode()),
                     description=f"written to {shown}"),
        EmbeddedResource(type="resource", resource=TextResourceContents(uri=uri, mime_type=mime, text=body))]


def row_type(function: Callable[..., Any], rows: str) -> type[BaseModel]:
    """The type of one row of a tool's list field ``rows``, read from its result annotation."""
    output = typing.get_args(inspect.signature(function, eval_str=True).return_annotation)[1]
    (item,) = typing.get_args(output.model_fields[rows].annotation)
    return item


def exportable(function: Callable[..., Any], rows: str, hint: str | None = None) -> Callable[..., Any]:
    """``function`` (a list tool) with the ``format`` parameter; see the module docstring.

    Args:
        function: the tool; its result annotation names the result model.
        rows: the result model's list field whose items are the rows.
        hint: what to tell the agent when there are no rows (e.g. the flag that fills them).
    """
    signature = inspect.signature(function, eval_str=True)
    item = row_type(function, rows)
    tool = function.__name__

    def attach(q: Queries, out: CallToolResult, fmt: ExportFormat, arguments: dict[str, Any]) -> CallToolResult:
        if fmt == "text" or out.structured_content is None:
            return out
        data = out.structured_content[rows]
        body = render(data, item, fmt)
        name = export_name(tool, out.structured_content.get("model"), arguments, fmt)
        shown, blocks = _written(q, name, body, MIME[fmt])
        summary = out.content[0].text if isinstance(out.content[0], TextContent) else ""
        note = wording.exported(len(data), fmt, shown, hint)
        return CallToolResult(content=[TextContent(type="text", text=f"{summary}\n{note}"), *out.content[1:],
                                       *blocks], structured_content=out.structured_content)

    if inspect.iscoroutinefunction(function):
        async def call(q: Queries, *args: Any, format: ExportFormat = "text", **kwargs: Any) -> Any:  # noqa: A002
            return attach(q, await function(q, *args, **kwargs), format, _arguments(kwargs))
    else:
        def call(q: Queries, *args: Any, format: ExportFormat = "text", **kwargs: Any) -> Any:  # noqa: A002
            return attach(q, function(q, *args, **kwargs), format, _arguments(kwargs))

    parameter = inspect.Parameter("format", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="text",
                                  annotation=FormatParam)
    call.__name__ = call.__qualname__ = tool
    call.__module__ = function.__module__
    call.__doc__ = (function.__doc__ or "").rstrip() + (
        f"\n\n    format='csv' or 'jsonl' also writes the {rows} as a file and attaches it (export://).")
    parameters = [*signature.parameters.values(), parameter]
    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return call


def _arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments that name its answer (the MCP context is not one of them)."""
    return {k: v for k, v in kwargs.items() if k != "ctx"}


def export_neuron(
    q: Queries, layer: Layer, neuron: Neuron, model: ModelName = None, units: UnitsName = None,
    examples: Annotated[Count, Field(ge=1, le=MAX_LIMIT,
                                     description="Top corpus windows to include.")] = EXPORT_WINDOWS,
) -> Annotated[CallToolResult, NeuronExport]:
    """A neuron's record in an open shape close to Neuronpedia's feature export: its top corpus
    windows (tokens, activation at the pivot, maxValue), the tokens its output promotes and
    suppresses (pos_str/pos_values, neg_str/neg_values), its N2G graph as an explanation with its
    held-out scores, firing density and max activation. Written as JSON under the exports folder
    and attached as a resource, to hand to a notebook or another tool."""
    model = unit_model(model, units)
    out = q.export_neuron(model, layer, neuron, examples)
    body = out.model_dump_json(indent=1)
    name = export_name("export_neuron", out.modelId, {"layer": layer, "neuron": neuron, "examples": examples}, "json")
    shown, blocks = _written(q, name, body, MIME["json"])
    return result(wording.export_neuron(out, shown), out, blocks)


def export_resource(q: Queries, name: str) -> str:
    """An exported answer (CSV, JSON lines or JSON) by its file name, e.g.
    export://search_graphs-smollm2-135m-380b56b20b.csv"""
    return export_path(name).read_text(encoding="utf-8")
