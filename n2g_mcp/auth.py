"""HTTP transport's guard: a static bearer token, required to bind beyond the loopback interface.

:func:`http_app` is the Streamable HTTP ASGI app (endpoint ``/mcp``, and the viewer's pages at
``/`` where given), wrapped in :class:`BearerTokenMiddleware` when a token is given. (The SDK's
``token_verifier`` expects an OAuth issuer; a shared static token needs none.)

A browser cannot send an ``Authorization`` header from a link, so the viewer's pages also take
the token once as ``?token=<token>``: the answer sets it as a cookie (HttpOnly, SameSite=Strict)
and sends the browser on to the same page without it in the address. The cookie is accepted for
the viewer's pages only, never for ``/mcp`` (a page of another site cannot spend it there).
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mcp.server.mcpserver import MCPServer
from starlette.routing import BaseRoute

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "N2G_MCP_TOKEN"
COOKIE = "n2g_token"
"""The cookie a browser carries the token in, for the viewer's pages."""
MCP_PATH = "/mcp"

_REFUSED = b'{"error": "missing or wrong bearer token; send Authorization: Bearer <token>"}'
_REFUSED_PAGE = (b"<!doctype html><title>token needed</title><p>This n2g-mcp server needs its token: open this "
                 b"address once with <code>?token=&lt;token&gt;</code> added (the browser then keeps it as a cookie).")


def bearer_token(header: bytes) -> bytes | None:
    """The token of an ``Authorization`` header, the scheme matched case-insensitively (RFC 7235).

    >>> bearer_token(b"bearer abc"), bearer_token(b"Basic abc")
    (b'abc', None)
    """
    scheme, _, token = header.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


def cookie_token(header: bytes) -> bytes | None:
    """The viewer's token in a ``Cookie`` header, if any.

    >>> cookie_token(b"a=1; n2g_token=abc"), cookie_token(b"a=1")
    (b'abc', None)
    """
    for part in header.split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == COOKIE.encode() and value:
            return value
    return None


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``; the
    viewer's pages may carry it as the :data:`COOKIE` cookie, or once as ``?token=`` (see the
    module docstring)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self._expected = app, token.encode()

    def _good(self, given: bytes | None) -> bool:
        return given is not None and hmac.compare_digest(given, self._expected)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self._good(bearer_token(headers.get(b"authorization", b""))):
            await self.app(scope, receive, send)
            return
        viewer = not scope["path"].startswith(MCP_PATH)
        if viewer and self._good(cookie_token(headers.get(b"cookie", b""))):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode(errors="replace"), keep_blank_values=True)
        given = next((v for k, v in query if k == "token"), None)
        if viewer and scope["method"] == "GET" and self._good(None if given is None else given.encode()):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            cookie = f"{COOKIE}={self._expected.decode()}; Path=/; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        page = viewer and b"text/html" in headers.get(b"accept", b"")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/html" if page else b"application/json"),
                                (b"www-authenticate", b'Bearer realm="n2g-mcp"')]})
        await send({"type": "http.response.body", "body": _REFUSED_PAGE if page else _REFUSED})


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond the loopback interface without a token.

    Raises:
        ValueError: for a non-loopback host without a token.
    """
    if host not in LOCAL_HOSTS and not token:
        raise ValueError(f"binding {host} exposes the server beyond this machine; pass --token or set "
                         f"{TOKEN_ENV} (clients then send 'Authorization: Bearer <token>')")


def http_app(server: MCPServer, *, host: str = "127.0.0.1", token: str | None = None,
             pages: list[BaseRoute] | None = None) -> Any:
    """The Streamable HTTP ASGI app (endpoint ``/mcp``, and ``pages`` beside it: the viewer's
    routes), behind a bearer token when one is given.

    Raises:
        ValueError: for a non-loopback host without a token.
    """
    check_exposure(host, token)
    app = server.streamable_http_app(host=host)
    app.router.routes.extend(pages or [])
    return BearerTokenMiddleware(app, token) if token else app
