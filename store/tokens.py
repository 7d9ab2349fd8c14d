"""Token keys for matching: case- and space-insensitive normalisation, and a graph's token sets.

The reference implementation lowercases Title-case tokens and strips spaces before matching. We
lowercase every token and strip surrounding whitespace, except that a token made only of
whitespace (a newline, an indent) keeps its exact form: stripping it would make every whitespace
token the same empty key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple, Protocol

REPEAT_KEY: Final = "<repeat>"
"""How a repeat node (``store.trie.REPEAT``: "continues an earlier occurrence in the same text")
is named in a graph's activating and context token maps, and so in searches and similarity. It
folds to itself. A vocabulary token spelled exactly so would share the name there (never in
prediction, which reads the trie)."""


class HasTokens(Protocol):
    """Anything with a graph's token maps: a ``NeuronGraph``, or the index's record of one."""

    @property
    def activating_tokens(self) -> Mapping[str, float] | list[str]: ...

    @property
    def context_tokens(self) -> Mapping[str, float] | list[str]: ...


class TokenKeys(NamedTuple):
    """A graph's activating and context tokens as matching keys."""

    activating: frozenset[str]
    context: frozenset[str]


def normalize(token: str) -> str:
    """The matching key of a token.

    >>> normalize(" Except"), normalize("\\n"), normalize("  ")
    ('except', '\\n', '  ')
    """
    key = token.strip().lower()
    return key if key else token


def _identity(token: str) -> str:
    return token


def token_keys(graph: HasTokens, exact: bool = False) -> TokenKeys:
    """The keys a graph's tokens match under: normalised (default) or exact spellings.

    >>> from store.trie import NeuronTrie
    >>> from store.graph import Matching, graph_record
    >>> trie = NeuronTrie()
    >>> trie.insert((" The", " cat"), 1.0, [0.9])
    >>> g = graph_record(model="m", layer=0, neuron=0, hook="h", max_activation=1.0,
    ...                  trie=trie, matching=Matching())
    >>> token_keys(g)
    TokenKeys(activating=frozenset({'the'}), context=frozenset({'cat'}))
    """
    key = _identity if exact else normalize
    return TokenKeys(frozenset(map(key, graph.activating_tokens)),
                     frozenset(map(key, graph.context_tokens)))


def repeated_tokens(graph: HasTokens, exact: bool = False) -> list[str]:
    """The graph's signs of in-context (induction-like) behaviour, strongest first: ``REPEAT_KEY``
    where it has a repeat node, then the activating tokens that also stand among its context
    tokens.

    A token that makes the neuron fire when it appeared earlier in the text is the older
    signature of the same behaviour: "ab ... ab". Tokens are compared by normalised key unless
    ``exact``; the activating spelling is returned.

    >>> class G:
    ...     activating_tokens = {" b": 1.0, " c": 0.7}
    ...     context_tokens = {REPEAT_KEY: 1.0, " B": 0.9}
    >>> repeated_tokens(G()), repeated_tokens(G(), exact=True)
    (['<repeat>', ' b'], ['<repeat>'])
    """
    key = _identity if exact else normalize
    context = {key(t) for t in graph.context_tokens}
    found = [t for t in graph.activating_tokens if t != REPEAT_KEY and key(t) in context]
    if REPEAT_KEY in graph.activating_tokens or REPEAT_KEY in graph.context_tokens:
        found.insert(0, REPEAT_KEY)
    return found
