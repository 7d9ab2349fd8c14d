"""Token keys for matching: case- and space-insensitive normalisation, and a graph's token sets.

The reference implementation lowercases Title-case tokens and strips spaces before matching. We
lowercase every token and strip surrounding whitespace, except that a token made only of
whitespace (a newline, an indent) keeps its exact form: stripping it would make every whitespace
token the same empty key. :func:`repeat_lengths` measures how much of a sequence repeats
earlier text, what a graph's repeat nodes match.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

ACTIVATING_MIN: Final = 0.1
"""A token counts as activating where the graph expects at least this share of the neuron's max
on it (a graph calibrated on ordinary text holds many tokens it expects little of)."""

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


def repeated_tokens(graph: HasTokens) -> list[str]:
    """The graph's signs of in-context (induction-like) behaviour, strongest first: ``REPEAT_KEY``
    where it has a repeat node, then the activating tokens that also stand, spelled exactly
    alike, among its context tokens.

    A token that makes the neuron fire when it appeared earlier in the text is the older
    signature of the same behaviour: "ab ... ab". Spellings are compared exactly, whatever a
    search's ``exact``: a context ``'Th'`` before an activating ``'th'`` is a different token, and
    counting it as a repeat made the signature match over a quarter of a store (issue 27).

    >>> class G:
    ...     activating_tokens = {" b": 1.0, " c": 0.7, " d": 0.5}
    ...     context_tokens = {REPEAT_KEY: 1.0, " b": 0.9, " D": 0.8}
    >>> repeated_tokens(G())
    ['<repeat>', ' b']
    """
    context = set(graph.context_tokens)
    found = [t for t in graph.activating_tokens if t != REPEAT_KEY and t in context]
    if REPEAT_KEY in graph.activating_tokens or REPEAT_KEY in context:
        found.insert(0, REPEAT_KEY)
    return found


def repeat_level(activating: Collection[str], context: Collection[str]) -> int:
    """How a graph with these activating and context tokens shows in-context behaviour, the
    order ``search_graphs(repeated=true)`` ranks by: 2 for a repeat path (``REPEAT_KEY`` in either
    set), 1 for a token both activating and context spelled exactly alike (see
    :func:`repeated_tokens`), 0 for neither.

    >>> repeat_level(["th"], ["Th"]), repeat_level([" b"], [" b"]), repeat_level([" b"], [REPEAT_KEY])
    (0, 1, 2)
    """
    if REPEAT_KEY in activating or REPEAT_KEY in context:
        return 2
    return int(not set(activating).isdisjoint(context))


def key_shares(activating: Mapping[str, float]) -> dict[str, float]:
    """Each activating key's activation as a share of the graph's strongest (a key's spellings
    count as their strongest): what a search for that key finds the graph explained by.

    >>> key_shares({" Import": 0.5, " import": 0.25, " wasting": 1.0})
    {'import': 0.5, 'wasting': 1.0}
    """
    top = max(activating.values(), default=0.0)
    best: dict[str, float] = {}
    for token, value in activating.items():
        key = normalize(token)
        best[key] = max(best.get(key, value), value)
    return {key: value / top if top > 0 else 0.0 for key, value in best.items()}


def explained(activating: Mapping[str, float], query: Sequence[str], exact: bool = False) -> float | None:
    """How much of a graph a search's activating tokens explain: the mean, over the query's
    distinct tokens, of each one's activation relative to the graph's strongest (1.0: the query
    holds what fires the neuron most). None for no query tokens; a token the graph lacks counts 0.

    >>> explained({" wasting": 1.0, " import": 0.4}, [" import"])
    0.4
    >>> explained({" Import": 1.0, " import": 0.9}, [" import"], exact=True)
    0.9
    """
    keys = list(dict.fromkeys(query if exact else map(normalize, query)))
    if not keys:
        return None
    if exact:
        top = max(activating.values(), default=0.0)
        shares = [activating.get(k, 0.0) / top if top > 0 else 0.0 for k in keys]
    else:
        by_key = key_shares(activating)
        shares = [by_key.get(k, 0.0) for k in keys]
    return sum(shares) / len(shares)


def matched_first(tokens: Sequence[str], query: Sequence[str], exact: bool = False) -> list[str]:
    """A graph's activating tokens with those a search matched first (in the graph's order), so
    that a hit shows why it was found.

    >>> matched_first([" wasting", " -=", " Import", " import"], [" import"])
    [' Import', ' import', ' wasting', ' -=']
    """
    key = _identity if exact else normalize
    wanted = {key(t) for t in query}
    return [t for t in tokens if key(t) in wanted] + [t for t in tokens if key(t) not in wanted]


def repeat_lengths(tokens: Sequence[Any], cap: int) -> list[int]:
    """For every position ``i``, the largest ``n <= cap`` such that the ``n`` tokens ending at
    ``i`` occurred earlier in the sequence, in order (an earlier copy ending before ``i``); 0
    where token ``i`` is new.

    If the ``n + 1`` tokens ending at ``i`` occurred earlier, so did the ``n`` ending at ``i``,
    so the first n-gram not seen before ends the count.

    >>> repeat_lengths(["a", "b", "c", "a", "b", "b", "a"], 3)
    [0, 0, 0, 1, 2, 1, 1]
    """
    seen: list[set[tuple[Any, ...]]] = [set() for _ in range(cap)]  # seen[m]: (m+1)-grams so far
    out: list[int] = []
    for i in range(len(tokens)):
        n = 0
        while n < cap and n <= i and tuple(tokens[i - n:i + 1]) in seen[n]:
            n += 1
        out.append(n)
        for m in range(min(cap, i + 1)):
            seen[m].add(tuple(tokens[i - m:i + 1]))
    return out
