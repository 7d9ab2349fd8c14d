"""HTTP transport's guard: a static bearer token, required to bind beyond the loopback interface.

:func:`http_app` is the Streamable HTTP ASGI app (endpoint ``/mcp``), wrapped in
:class:`BearerTokenMiddleware` when a token is given. (The SDK's ``token_verifier`` expects an
OAuth issuer; a shared static token needs none.)
"""

from __future__ import annotations

import hmac
from typing import Any

from mcp.server.mcpserver import MCPServer

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "N2G_MCP_TOKEN"

_REFUSED = b'{"error": "missing or wrong bearer token; send Authorization: Bearer <token>"}'


def bearer_token(header: bytes) -> bytes | None:
    """The token of an ``Authorization`` header, the scheme matched case-insensitively (RFC 7235).

    >>> bearer_token(b"bearer abc"), bearer_token(b"Basic abc")
    (b'abc', None)
    """
    scheme, _, token = header.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self._expected = app, token.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = bearer_token(dict(scope.get("headers") or []).get(b"authorization", b""))
            if given is None or not hmac.compare_digest(given, self._expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="n2g-mcp"')]})
                await send({"type": "http.response.body", "body": _REFUSED})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer, *, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The Streamable HTTP ASGI app (endpoint ``/mcp``), behind a bearer token when one is given.

    Raises:
        ValueError: for a non-loopback host without a token.
    """
    if host not in LOCAL_HOSTS and not token:
        raise ValueError(f"binding {host} exposes the server beyond this machine; pass --token or set "
                         f"{TOKEN_ENV} (clients then send 'Authorization: Bearer <token>')")
    app = server.streamable_http_app(host=host)
    return BearerTokenMiddleware(app, token) if token else app
