"""Cursors for paged results: opaque to the agent, signed, and bound to the query they page.

A cursor carries the next offset and a short hash of the query's arguments, signed with an HMAC
key the server holds. A cursor that was altered, made by another server (or before a restart),
or made for other arguments is refused with a message that says what to do; an agent can never
ask for an offset the server did not hand out.

>>> pager = Pager(b"k" * 32)
>>> cursor = pager.encode(20, ["search", "m", 1])
>>> pager.decode(cursor, ["search", "m", 1], "search_graphs")
20
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import orjson

from store.errors import BadArgument

MAX_CURSOR_CHARS = 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def query_key(query: object) -> str:
    """A short, stable hash of a query's arguments."""
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class Pager:
    """Makes and checks cursors; see the module docstring.

    Args:
        secret: the HMAC key; a random one per server by default (cursors then end with it).
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret is not None else os.urandom(32)

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._key, payload, hashlib.sha256).digest()[:12])

    def encode(self, offset: int, query: object) -> str:
        """The cursor of the page starting at ``offset`` of this query."""
        payload = orjson.dumps({"o": offset, "q": query_key(query)})
        return f"{_b64(payload)}.{self._sign(payload)}"

    def decode(self, cursor: str | None, query: object, tool: str) -> int:
        """The offset a cursor points at (0 for no cursor).

        Raises:
            BadArgument: for a cursor that is malformed, altered, not made here, or made for
                other arguments.
        """
        if not cursor:
            return 0
        restart = f"call {tool} again without cursor to start from the first page"
        try:
            body, _, signature = cursor.partition(".")
            payload = _unb64(body)
            valid = hmac.compare_digest(signature, self._sign(payload))
            raw = orjson.loads(payload) if valid else None
            offset, key = (int(raw["o"]), str(raw["q"])) if valid else (-1, "")
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            valid = False
        if not valid or offset < 0:
            raise BadArgument(f"this cursor is not one this server made (it was changed, or comes from "
                              f"before a restart); {restart}")
        if key != query_key(query):
            raise BadArgument(f"this cursor belongs to a different {tool} query; repeat the same "
                              f"arguments with it, or {restart}")
        return offset
