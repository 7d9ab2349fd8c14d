"""The viewer's routes over the query library: pages, the graph as SVG or PNG, and the predict API.

    GET  /                                   the models
    GET  /m/<model>?activating=..&context=.. a model: per-layer plots, search (search_graphs)
    GET  /m/<model>/L<layer>/N<neuron>       a neuron (links: ``n2g_mcp.viewer.links``); ?text=..
                                             runs that text in its predict box as it opens
    GET  /m/<model>/L<layer>/N<neuron>.svg   its graph drawn (render_graph_dot's picture), or .png
    POST /api/predict                        {model, layer, neuron, text, compare}: predict_activations
    GET  /static/<file>                      the style sheet and the one script, from the package

:func:`viewer_routes` are mounted at ``/`` of the Streamable HTTP app (``n2g_mcp.auth``, behind
its token) and served alone by ``n2g-mcp view`` (:func:`viewer_app`). Pages are made in worker
threads (Starlette runs plain functions there), since they read the stores and may run the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from n2g_mcp.queries import Queries
from n2g_mcp.viewer.data import NeuronPages, model_data
from n2g_mcp.viewer.pages import error_page, index_page, model_page, neuron_page
from store.errors import BadArgument, N2GError, NotFound

STATIC = Path(__file__).with_name("static")
MAX_BODY = 64_000
"""Bytes a predict request may send (the library caps the text itself)."""


def _status(exc: N2GError) -> int:
    return 404 if isinstance(exc, NotFound) else 400 if isinstance(exc, BadArgument) else 503


def viewer_routes(q: Queries) -> list[BaseRoute]:
    """The viewer's routes over ``q``, the server's own query library (so pages show the tools' numbers)."""
    pages = NeuronPages(q)

    def html(make) -> Response:  # type: ignore[no-untyped-def]
        try:
            return HTMLResponse(make())
        except N2GError as exc:
            return HTMLResponse(error_page(q.shown(str(exc)), _status(exc)), status_code=_status(exc))

    def index(request: Request) -> Response:
        return html(lambda: index_page(q.list_models()))

    def model(request: Request) -> Response:
        args = request.query_params
        return html(lambda: model_page(model_data(q, request.path_params["model"], args.get("activating", ""),
                                                  args.get("context", ""))))

    def neuron(request: Request) -> Response:
        p = request.path_params
        text = request.query_params.get("text", "")
        return html(lambda: neuron_page(pages.neuron(p["model"], p["layer"], p["neuron"]), text))

    def picture(request: Request) -> Response:
        p = request.path_params
        fmt = p["fmt"]
        if fmt not in ("svg", "png"):
            return Response("ask for .svg or .png", status_code=404)
        try:
            data = q.picture(p["model"], p["layer"], p["neuron"], fmt)
        except N2GError as exc:
            return Response(q.shown(str(exc)), status_code=_status(exc), media_type="text/plain")
        return Response(data, media_type="image/svg+xml" if fmt == "svg" else "image/png")

    async def predict(request: Request) -> Response:
        raw = await request.body()
        try:
            if len(raw) > MAX_BODY:
                raise BadArgument(f"the request is over {MAX_BODY:,} bytes; send a shorter text")
            body = json.loads(raw or b"{}")
            args = (body.get("model"), int(body["layer"]), int(body["neuron"]), str(body["text"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": f"send JSON with layer, neuron and text ({exc})"}, status_code=400)
        try:
            out = await run_in_threadpool(q.predict, *args, compare=bool(body.get("compare")))
        except N2GError as exc:
            return JSONResponse({"error": q.shown(str(exc))}, status_code=_status(exc))
        return JSONResponse(out.model_dump(mode="json"))

    return [
        Route("/", index),
        Route("/m/{model:path}/L{layer:int}/N{neuron:int}.{fmt}", picture),
        Route("/m/{model:path}/L{layer:int}/N{neuron:int}", neuron),
        Route("/m/{model:path}", model),
        Route("/api/predict", predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def viewer_app(q: Queries) -> Starlette:
    """The viewer alone (``n2g-mcp view``)."""
    return Starlette(routes=viewer_routes(q))
