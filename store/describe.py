"""A neuron graph in words: one short, deterministic sentence made from its trie.

In: a :class:`store.trie.NeuronTrie` (or a :class:`store.graph.NeuronGraph`). Out: a description
such as ``fires on ' except' after ' everyone'; also on ' but'; strongest on ' except' after
' everyone…' (0.95)``. It is computed on read from the trie, so every stored graph has one without
a rebuild; nothing here is stored or learnt, and the same trie always reads the same.

How it is made:

- the activating tokens (the trie's root children) are ranked by their largest activation; the
  strongest ``main`` of them that reach half the strongest's activation are named with their
  context: the most important context tokens anywhere below them (``after ' everyone' or ' all'``),
  and, where the token alone also ends a path, what it predicts without context (``0.25 without
  it``), or ``in any context`` where it has no context at all;
- the other activating tokens follow as ``also on ...`` (up to ``also``, then a count);
- the strongest path is spelled out in text order, its context tokens joined as the text reads
  them and ``…`` for each position whose token does not matter (IGNORE);
- a repeat node (``store.trie.REPEAT``) reads as what it matches: an activating one as "any token
  seen earlier in the text" (or, when its path repeats two or more tokens, the induction pattern),
  a context one as "a repeat of earlier text".

Tokens are quoted as Python quotes strings (``' except'``) so a leading space stays visible.

>>> trie = NeuronTrie()
>>> trie.insert((" import", "from"), 1.0, [0.9])
>>> trie.insert((" import", " flask", "from"), 1.0, [0.5, 0.95])
>>> trie.insert((" importing",), 0.4)
>>> describe(trie)
"fires on ' import' after 'from' or ' flask'; also on ' importing'; strongest on ' import' after 'from flask' (1.00)"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from store.trie import IGNORE, REPEAT, Node, NeuronTrie, Token

if TYPE_CHECKING:
    from store.graph import NeuronGraph

MAIN = 3
"""Activating tokens described with their context."""
ALSO = 6
"""Further activating tokens named after ``also on``."""
CONTEXTS = 3
"""Context tokens named per described activating token."""
GAP = "…"
"""How a position whose token does not matter (IGNORE) reads inside a spelled-out context."""
REPEATED_TEXT = "a repeat of earlier text"
"""How a context repeat node reads."""
ANY_CONTEXT = " in any context"
"""What follows activating tokens that need no context."""
EMPTY = "no paths: the graph predicts that the neuron never fires"


def quote(token: Token) -> str:
    """A token as descriptions show it: quoted, so a leading space is visible.

    >>> quote(" except"), quote("from"), quote(REPEAT)
    ("' except'", "'from'", 'a repeat of earlier text')
    """
    return REPEATED_TEXT if token is REPEAT else repr(token)


def _alternatives(items: Sequence[str], more: int = 0, conjunction: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``, and ``(+n more)`` where some were left out."""
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {conjunction} " + items[-1]
    return text + (f" (+{more} more)" if more > 0 else "")


def _subtree(node: Node) -> list[tuple[int, Node]]:
    """Every node below ``node`` with its depth (1 for its children), walked iteratively."""
    out: list[tuple[int, Node]] = []
    stack = [(1, child) for child in reversed(node.children.values())]
    while stack:
        depth, current = stack.pop()
        out.append((depth, current))
        stack.extend((depth + 1, c) for c in reversed(current.children.values()))
    return out


def _contexts(node: Node) -> list[Token]:
    """The context tokens below an activating node, most important first (ties: first inserted)."""
    best: dict[Token, float] = {}
    for _, below in _subtree(node):
        if below.token is not IGNORE:
            best[below.token] = max(best.get(below.token, float("-inf")), below.importance)
    return sorted(best, key=lambda t: -best[t])


def _repeat_run(node: Node) -> int:
    """How many tokens a REPEAT activating node's longest all-REPEAT chain spans (1: itself)."""
    longest = 1
    for depth, below in _subtree(node):
        if below.token is REPEAT:
            longest = max(longest, depth + 1)
    return longest


def _activating(node: Node) -> str:
    """An activating node by name: its quoted token, or what a repeat node matches."""
    if node.token is not REPEAT:
        return quote(node.token)
    run = _repeat_run(node)
    if run == 1:
        return "any token seen earlier in the text"
    if run == 2:
        return "the second token of a bigram seen earlier in the text (induction: 'a b … a [b]')"
    return f"the last token of a {run}-token sequence seen earlier in the text (induction)"


def _clause(node: Node) -> str:
    """One described activating token: the token, its context, what it predicts without it."""
    name = _activating(node)
    context = [t for t in _contexts(node) if not (node.token is REPEAT and t is REPEAT)]
    if not context:
        return name if node.token is REPEAT else name + ANY_CONTEXT
    shown = [quote(t) for t in context[:CONTEXTS]]
    text = f"{name} after {_alternatives(shown, len(context) - CONTEXTS)}"
    if node.end is not None:
        text += f" ({node.end:.2f} without it)"
    return text


def _strongest(trie: NeuronTrie) -> tuple[tuple[Token, ...], float] | None:
    """The path with the largest end activation (ties: the longer, then the first walked)."""
    best: tuple[tuple[Token, ...], float] | None = None
    for path, node in trie.walk():
        if node.end is not None and (best is None or (node.end, len(path)) > (best[1], len(best[0]))):
            best = (path, node.end)
    return best


def spell_context(context: Sequence[Token]) -> str:
    """Context tokens (nearest first, as a path stores them) as the text reads them.

    >>> spell_context([" flask", "from"]), spell_context([IGNORE, " everyone"])
    ("'from flask'", "' everyone…'")
    """
    parts = []
    for token in reversed(context):
        parts.append(GAP if token is IGNORE else "↻" if token is REPEAT else token)
    # Trailing IGNOREs of a stored path cannot happen (a path ends on a real token), but a gap
    # right before the activating token can: it stays, as "…".
    return repr("".join(parts))


def describe(trie: NeuronTrie, *, main: int = MAIN, also: int = ALSO) -> str:
    """A short description of what the graph fires on; see the module docstring.

    Args:
        trie: the graph.
        main: activating tokens described with their context (those at least half as strong as
            the strongest).
        also: further activating tokens named, then counted.

    Returns:
        One line, lower case at the start so that it reads after a neuron's id
        (``L3/N7 fires on ...``); :data:`EMPTY` for a trie with no paths.

    >>> bigram = NeuronTrie()
    >>> bigram.insert((REPEAT, REPEAT), 1.0, [1.0])
    >>> describe(bigram)
    "fires on the second token of a bigram seen earlier in the text (induction: 'a b … a [b]')"
    >>> alone = NeuronTrie()
    >>> alone.insert((" the",), 0.8)
    >>> describe(alone)
    "fires on ' the' in any context"
    """
    roots = sorted(trie.root.children.values(), key=lambda n: -n.importance)  # stable: ties as inserted
    if not roots:
        return EMPTY
    peak = roots[0].importance
    described = [n for n in roots[:main] if n.importance >= peak / 2] or roots[:1]
    rest = roots[len(described):]
    clauses: list[str] = []
    bare: list[str] = []  # tokens with no context, named together in one clause
    for n in described:
        clause = _clause(n)
        if clause.endswith(ANY_CONTEXT):
            if not bare:
                clauses.append("")  # the bare tokens' clause takes the first one's place
            bare.append(clause.removesuffix(ANY_CONTEXT))
        else:
            clauses.append(clause)
    text = "fires on " + "; ".join(c or _alternatives(bare, conjunction="and") + ANY_CONTEXT
                                  for c in clauses)
    if rest:
        names = [_activating(n) for n in rest[:also]]
        text += "; also on " + ", ".join(names) + (f" (+{len(rest) - also} more)" if len(rest) > also else "")
    strongest = _strongest(trie)
    if strongest is not None and _adds(strongest[0], described[0]):
        path, end = strongest
        text += f"; strongest on {_activating(trie.node(path[:1]))} after " \
                f"{spell_context(path[1:])} ({end:.2f})"
    return text


def _adds(path: tuple[Token, ...], first: Node) -> bool:
    """Whether spelling out the strongest path says more than the first clause did: not when
    it has no context, is the first token after its first named context alone, or is a repeat
    node's chain of repeats."""
    if len(path) == 1 or (path[0] is REPEAT and all(t is REPEAT for t in path)):
        return False
    first_context = next(iter(_contexts(first)), IGNORE)
    return not (len(path) == 2 and path[0] == first.token and path[1] == first_context)


def describe_graph(graph: NeuronGraph) -> str:
    """A stored graph's description (:func:`describe`), with how it matches text where that
    changes the reading, and a warning where the builder could not explain the neuron."""
    text = describe(graph.graph)
    if graph.matching.normalized:
        text += " (tokens matched case- and space-insensitively)"
    if graph.unexplained:
        text = "unexplained: the builder found no path the neuron's firing supports, so this graph " \
               "predicts no firing; " + text
    return text
