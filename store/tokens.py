"""Token normalisation for matching: case- and space-insensitive keys.

The reference implementation lowercases Title-case tokens and strips spaces before matching. We
lowercase every token and strip surrounding whitespace, except that a token made only of
whitespace (a newline, an indent) keeps its exact form: stripping it would make every whitespace
token the same empty key.
"""

from __future__ import annotations


def normalize(token: str) -> str:
    """The matching key of a token.

    >>> normalize(" Except"), normalize("\\n"), normalize("  ")
    ('except', '\\n', '  ')
    """
    key = token.strip().lower()
    return key if key else token
