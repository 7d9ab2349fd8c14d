"""The neuron graph: a trie of token paths that predicts a neuron's activation.

A path starts at an *activating* token and walks backwards through the context that made the
neuron fire on it: ``(" except", IGNORE, " everyone")`` reads "fires on ' except' when ' everyone'
stands two tokens before it". ``IGNORE`` means "some token stands here; which one does not
matter". The end of a path holds the neuron's normalised activation (activation / max activation)
on the example that made the path.

Prediction (Foote et al. 2023, section 3.2): for each token of a text, start at the root child
for that token, walk backwards through the preceding tokens along every child that matches
exactly or is an IGNORE node, and return the largest end activation met on the way (0 when no
path matches). The paper collects all matching paths (``rule="all"``); the reference code takes
one greedy walk, the exact child else the IGNORE child, with no backtracking (``rule="greedy"``).
Graphs calibrated on ordinary text (issue 28) hold graded ENDs (the neuron's mean over a path's
matches), so their rule is ``"specific"``: the END of the matching path with the most literal or
REPEAT nodes (ties: the largest), and a ``default`` where none matches (their mean), not 0.

A third node kind, ``REPEAT``, says "this continues an earlier occurrence in the same text". A
REPEAT node at depth ``k`` of a path (0 for the activating position) matches position ``i - k``
when the ``k + 1`` tokens from it up to the activating token ``i`` occurred earlier in the text,
in the same order (an earlier copy ending before ``i``); which tokens they are does not matter.
``(REPEAT,)`` fires on any token seen before; ``(REPEAT, REPEAT)`` on the second token of a
bigram seen before (the induction pattern "a b ... a [b]"); ``(" b", REPEAT)`` on " b" where
the bigram ending at it is a repeat. Under ``rule="greedy"`` a walk prefers, at each step, the
exact child, then a REPEAT child that matches, then the IGNORE child (at the root: the token's
own child, else REPEAT). In a graph's token maps and searches the node is named ``REPEAT_KEY``.

Traversals are iterative, so graphs built from long contexts never hit the recursion limit.

>>> trie = NeuronTrie()
>>> trie.insert((" except", IGNORE, " everyone"), activation=0.9, importances=(0.0, 0.95))
>>> trie.predict([" everyone", " is", " here", " except"])
[0.0, 0.0, 0.0, 0.0]
>>> trie.predict([" everyone", " else", " except"])
[0.0, 0.0, 0.9]
>>> bigram = NeuronTrie()
>>> bigram.insert((REPEAT, REPEAT), activation=1.0, importances=(1.0,))
>>> bigram.predict([" a", " b", " c", " a", " b", " b"])
[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from store.tokens import ACTIVATING_MIN, REPEAT_KEY, normalize, repeat_lengths

IGNORE: Final = None
"""The token of an ignore node: some token must stand here, but which one does not matter."""


class NodeKind(enum.Enum):
    """Node kinds that are neither a literal token nor IGNORE."""

    REPEAT = "repeat"

    def __repr__(self) -> str:
        return self.name


REPEAT: Final = NodeKind.REPEAT
"""The token of a repeat node: the tokens from here up to the activating token occurred earlier
in the text, in order (see the module docstring)."""

REPEAT_ROW: Final = {"kind": "repeat"}
"""How a repeat node's token is written in trie rows. A JSON object can never be a token string
or null, so rows written before repeat nodes existed load unchanged, and a reader that predates
them refuses such a row (``TrieFormatError``) instead of matching it as a literal token."""

Token = str | NodeKind | None
Path = tuple[Token, ...]
MatchRule = Literal["all", "greedy", "specific"]


class PathNotFound(KeyError):
    """A path that the trie does not hold."""


class TrieFormatError(ValueError):
    """Serialised trie rows that do not describe a valid trie."""


def label(token: Token) -> str | None:
    """A node's token as named in token maps: the token, ``REPEAT_KEY`` for REPEAT, None for IGNORE.

    >>> label(" a"), label(REPEAT), label(IGNORE)
    (' a', '<repeat>', None)
    """
    return REPEAT_KEY if token is REPEAT else token


@dataclass(eq=False, slots=True)
class Node:
    """One token of one or more paths.

    ``importance`` is the largest saliency of this context token over the paths through it; on an
    activating (depth-1) node it is the largest normalised activation of those paths. ``end`` is
    the normalised activation of the paths that end here (their maximum), or None.
    """

    token: Token
    importance: float = 0.0
    end: float | None = None
    children: dict[Token, Node] = field(default_factory=dict)


class NeuronTrie(Mapping[Path, float]):
    """A trie of activating-token paths, as a mapping from path to end activation.

    Args:
        normalized: match tokens case- and space-insensitively (the reference code's rule)
            instead of exactly (the paper's).
    """

    def __init__(self, normalized: bool = False) -> None:
        self.normalized = normalized
        self._root = Node(token="")
        self._len = 0
        # One more than the depth of the deepest REPEAT node (0: none): how many tokens a text's
        # repeat lengths need to be counted to, so graphs without repeat nodes pay nothing.
        self._repeat_reach = 0
        self._parent_of: dict[int, Node] | None = None  # see _parents

    # ----------------------------------------------------------------- building
    def _key(self, token: Token) -> Token:
        if not isinstance(token, str) or not self.normalized:
            return token
        return normalize(token)

    def insert(
        self,
        path: Sequence[Token],
        activation: float,
        importances: Sequence[float] | None = None,
    ) -> None:
        """Add a path; where it exists already, keep the larger activation and importances.

        Args:
            path: the activating token, then its context tokens going backwards; IGNORE marks a
                position whose token does not matter, REPEAT one that continues an earlier copy.
            activation: the neuron's normalised activation on the example that made the path.
            importances: one saliency per context token (``len(path) - 1`` values).

        Raises:
            ValueError: for an empty path, an IGNORE activating token, a non-finite activation,
                or importances of the wrong length.
        """
        if not path:
            raise ValueError("a path needs at least its activating token")
        if path[0] is IGNORE:
            raise ValueError("the activating token of a path cannot be IGNORE")
        if not math.isfinite(activation):
            raise ValueError(f"activation must be finite, got {activation}")
        if importances is None:
            importances = [0.0] * (len(path) - 1)
        if len(importances) != len(path) - 1:
            raise ValueError(
                f"{len(path) - 1} context tokens but {len(importances)} importances"
            )
        node = self._root
        self._parent_of = None
        for depth, token in enumerate(path):
            key = self._key(token)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Node(token=token)
            weight = activation if depth == 0 else importances[depth - 1]
            child.importance = max(child.importance, weight)
            if token is REPEAT:
                self._repeat_reach = max(self._repeat_reach, depth + 1)
            node = child
        if node.end is None:
            self._len += 1
            node.end = activation
        else:
            node.end = max(node.end, activation)

    # ----------------------------------------------------------------- mapping
    def _find(self, path: Sequence[Token]) -> Node | None:
        node = self._root
        for token in path:
            node = node.children.get(self._key(token))
            if node is None:
                return None
        return node

    def node(self, path: Sequence[Token]) -> Node:
        """The node at the end of ``path``.

        Raises:
            PathNotFound: if the trie has no such node.
        """
        node = self._find(path) if path else None
        if node is None:
            raise PathNotFound(path)
        return node

    def __getitem__(self, path: Path) -> float:
        node = self._find(path) if path else None
        if node is None or node.end is None:
            raise PathNotFound(path)
        return node.end

    def __iter__(self) -> Iterator[Path]:
        for path, node in self.walk():
            if node.end is not None:
                yield path

    def __len__(self) -> int:
        return self._len

    def walk(self) -> Iterator[tuple[Path, Node]]:
        """Every node below the root with its path (tokens as first inserted), depth first."""
        stack: list[tuple[Path, Node]] = [
            ((child.token,), child) for child in reversed(self._root.children.values())
        ]
        while stack:
            path, node = stack.pop()
            yield path, node
            stack.extend((path + (c.token,), c) for c in reversed(node.children.values()))

    @property
    def root(self) -> Node:
        """The root node; its children are the activating tokens."""
        return self._root

    # ----------------------------------------------------------------- summaries
    def activating_tokens(self) -> dict[str, float]:
        """Activating tokens (``ACTIVATING_MIN`` and up; REPEAT as ``REPEAT_KEY``), strongest first."""
        tokens = {label(c.token): c.importance for c in self._root.children.values()
                  if c.token and c.importance >= ACTIVATING_MIN}
        return dict(sorted(tokens.items(), key=lambda kv: -kv[1]))

    def context_tokens(self) -> dict[str, float]:
        """Context tokens (IGNORE excluded, REPEAT as ``REPEAT_KEY``) with their largest
        importance, most important first."""
        best: dict[str, float] = {}
        for path, node in self.walk():
            name = label(node.token)
            if len(path) > 1 and name is not None:
                best[name] = max(best.get(name, -math.inf), node.importance)
        return dict(sorted(best.items(), key=lambda kv: -kv[1]))

    def depth(self) -> int:
        """The length of the longest path."""
        return max((len(path) for path, _ in self.walk()), default=0)

    # ----------------------------------------------------------------- prediction
    def _lengths(self, keys: Sequence[Token]) -> list[int]:
        """The text's repeat lengths, counted only as far as this trie's REPEAT nodes reach."""
        if not self._repeat_reach:
            return [0] * len(keys)
        return repeat_lengths(keys, self._repeat_reach)

    def _matching(self, keys: Sequence[Token], lengths: Sequence[int], i: int,
                  rule: MatchRule) -> Iterator[tuple[Node, int]]:
        """Every node on a path that matches token ``i`` and the tokens before it, with the number
        of literal or REPEAT nodes on its path (how specific it is).

        ``lengths[i]`` (from :meth:`_lengths`) says how many tokens ending at ``i`` repeat
        earlier text: a REPEAT node at depth ``k`` matches where it exceeds ``k``.
        """
        run = lengths[i]
        frontier = [(n, 1) for n in (self._root.children.get(keys[i]),
                                     self._root.children.get(REPEAT) if run > 0 else None) if n is not None]
        if rule == "greedy":
            frontier = frontier[:1]
        yield from frontier
        j = i - 1
        while frontier and j >= 0:
            repeats = run > i - j
            following: list[tuple[Node, int]] = []
            for node, weight in frontier:
                options = ((node.children.get(keys[j]), weight + 1),
                           (node.children.get(REPEAT) if repeats else None, weight + 1),
                           (node.children.get(IGNORE), weight))
                matched = [(n, w) for n, w in options if n is not None]
                following += matched[:1] if rule == "greedy" else matched
            yield from following
            frontier = following
            j -= 1

    @staticmethod
    def _best(ends: Sequence[tuple[Node, int]], rule: MatchRule) -> Node | None:
        """Of the matched ends (node, specificity), the one that predicts: the largest END, or
        under ``"specific"`` the most specific path's (ties: the largest END)."""
        key = (lambda nw: (nw[1], nw[0].end)) if rule == "specific" else (lambda nw: nw[0].end)
        return max(ends, key=key, default=(None, 0))[0]

    def predict(self, tokens: Sequence[str], rule: MatchRule = "all", default: float = 0.0) -> list[float]:
        """Predicted normalised activation for every token of a text.

        Args:
            tokens: the text's tokens, as strings, in order.
            rule: ``"all"`` follows every matching path (the paper); ``"greedy"`` the exact child
                else a matching REPEAT child else the IGNORE child, never two (the reference code);
                ``"specific"`` every path, the most specific one's END (graphs with graded ENDs).
            default: what a token that no path matches gets.

        Returns:
            One value per token: the END of the rule's path among those matching it, or ``default``.

        >>> graded = NeuronTrie()
        >>> graded.insert((" import",), 0.4); graded.insert((" import", " from"), 0.1, (0.5,))
        >>> graded.predict([" from", " import", " a", " import"], rule="specific", default=0.05)
        [0.05, 0.1, 0.05, 0.4]
        """
        return [default if (best := self._best(ends, rule)) is None else best.end for ends in self._ends(tokens, rule)]

    def explain(self, tokens: Sequence[str], rule: MatchRule = "all",
                default: float = 0.0) -> list[tuple[float, Path | None]]:
        """For every token of a text, its prediction and the path that gave it (why it fires), as
        :meth:`insert` takes paths: :meth:`predict`'s path (of equal ends the longer), else
        ``(default, None)``.

        >>> trie = NeuronTrie()
        >>> trie.insert((" except", IGNORE, " everyone"), 0.9, (0.0, 0.95)); trie.insert((" except",), 0.2)
        >>> trie.explain([" everyone", " else", " except", " except"])
        [(0.0, None), (0.0, None), (0.9, (' except', None, ' everyone')), (0.2, (' except',))]
        """
        out: list[tuple[float, Path | None]] = []
        for ends in self._ends(tokens, rule):
            if rule == "specific":
                best = self._best(ends, rule)
            else:  # of equal ends, the longer path says more
                best = max((n for n, _ in ends), key=lambda n: (n.end, self._depth(n)), default=None)
            out.append((default, None) if best is None else (best.end, self.path_of(best)))
        return out

    def _parents(self) -> dict[int, Node]:
        """Every node's parent, by the node's id; made on first use, again after an insert."""
        if self._parent_of is None:
            self._parent_of = {id(c): n for n in (self._root, *(n for _, n in self.walk()))
                               for c in n.children.values()}
        return self._parent_of

    def _depth(self, node: Node) -> int:
        parents, depth = self._parents(), 0
        while node is not self._root:
            node, depth = parents[id(node)], depth + 1
        return depth

    def path_of(self, node: Node) -> Path:
        """The path from the root to a node of this trie (activating token first).

        Raises:
            PathNotFound: for a node that is not in this trie.
        """
        parents, tokens = self._parents(), []
        while node is not self._root:
            if id(node) not in parents:
                raise PathNotFound(node.token)
            tokens.append(node.token)
            node = parents[id(node)]
        return tuple(reversed(tokens))

    def matches(self, tokens: Sequence[str], rule: MatchRule = "all") -> list[list[Node]]:
        """For every token of a text, the nodes where a path matching it ends (its path ends).

        A fit uses this to see which paths a text's tokens would take (e.g. to calibrate ENDs).

        >>> trie = NeuronTrie()
        >>> trie.insert((" b",), 0.2); trie.insert((" b", " a"), 0.9, (0.9,))
        >>> [[n.end for n in ends] for ends in trie.matches([" a", " b", " b"])]
        [[], [0.2, 0.9], [0.2]]
        """
        return [[n for n, _ in ends] for ends in self._ends(tokens, rule)]

    def _ends(self, tokens: Sequence[str], rule: MatchRule) -> list[list[tuple[Node, int]]]:
        """For every token of a text, the path ends matching it, each with its specificity."""
        keys = [self._key(t) for t in tokens]
        lengths = self._lengths(keys)
        return [[nw for nw in self._matching(keys, lengths, i, rule) if nw[0].end is not None]
                for i in range(len(keys))]

    # ----------------------------------------------------------------- copies and rows
    def normalized_copy(self) -> NeuronTrie:
        """The same paths keyed case- and space-insensitively (paths that collide are merged)."""
        copy = NeuronTrie(normalized=True)
        for path, node in self.walk():
            if node.end is not None:
                copy.insert(path, node.end, self._importances(path))
        return copy

    def filtered(self, keep: Callable[[Path, Node], bool]) -> NeuronTrie:
        """A copy holding only the paths for which ``keep(path, end_node)`` is true.

        >>> trie = NeuronTrie()
        >>> trie.insert(("a",), 0.2); trie.insert(("a", "b"), 0.9, (0.8,))
        >>> list(trie.filtered(lambda path, node: node.end > 0.5))
        [('a', 'b')]
        """
        copy = NeuronTrie(normalized=self.normalized)
        for path, node in self.walk():
            if node.end is not None and keep(path, node):
                copy.insert(path, node.end, self._importances(path))
        return copy

    def _importances(self, path: Path) -> list[float]:
        node, values = self._root, []
        for token in path:
            node = node.children[self._key(token)]
            values.append(node.importance)
        return values[1:]

    def to_rows(self) -> list[list]:
        """Serialise as ``[parent, token, importance, end]`` rows; row 0 is the root.

        Parents precede children, so :meth:`from_rows` rebuilds the trie in one pass. ``token``
        is None for IGNORE nodes and ``{"kind": "repeat"}`` for REPEAT nodes; ``end`` is None
        where no path ends.

        >>> trie = NeuronTrie()
        >>> trie.insert((REPEAT, REPEAT), 1.0, (1.0,))
        >>> trie.to_rows()
        [[-1, '', 0.0, None], [0, {'kind': 'repeat'}, 1.0, None], [1, {'kind': 'repeat'}, 1.0, 1.0]]
        """
        rows: list[list] = [[-1, "", 0.0, None]]
        stack: list[tuple[int, Node]] = [(0, self._root)]
        while stack:
            parent_index, node = stack.pop()
            for child in node.children.values():
                token = dict(REPEAT_ROW) if child.token is REPEAT else child.token
                rows.append([parent_index, token, round(child.importance, 4),
                             None if child.end is None else round(child.end, 4)])
                stack.append((len(rows) - 1, child))
        return rows

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], normalized: bool = False) -> NeuronTrie:
        """Rebuild a trie from :meth:`to_rows` output.

        Raises:
            TrieFormatError: if the rows do not describe a trie (bad parent, duplicate child,
                IGNORE activating token, unknown node kind, non-numeric or non-finite values).
        """
        trie = cls(normalized=normalized)
        if not rows or list(rows[0][:2]) != [-1, ""]:
            raise TrieFormatError("row 0 must be the root [-1, '', 0, null]")
        nodes: list[Node] = [trie._root]
        depths = [0]
        for index, row in enumerate(rows[1:], start=1):
            try:
                parent, token, importance, end = row
                parent = int(parent)
                importance = float(importance)
                end = None if end is None else float(end)
            except (TypeError, ValueError) as exc:
                raise TrieFormatError(f"row {index}: {row!r} is not [parent, token, importance, end]") from exc
            if not math.isfinite(importance) or (end is not None and not math.isfinite(end)):
                raise TrieFormatError(f"row {index}: importance and end must be finite numbers")
            if not 0 <= parent < index:
                raise TrieFormatError(f"row {index}: parent {parent} does not precede it")
            if isinstance(token, dict):
                if token != REPEAT_ROW:
                    raise TrieFormatError(f"row {index}: unknown node kind {token!r}")
                token = REPEAT
            elif token is not IGNORE and not isinstance(token, str):
                raise TrieFormatError(f"row {index}: token must be a string, null or a node kind")
            if parent == 0 and token is IGNORE:
                raise TrieFormatError(f"row {index}: an activating token cannot be IGNORE")
            node = Node(token=token, importance=importance, end=end)
            key = trie._key(token)
            siblings = nodes[parent].children
            if key in siblings:
                raise TrieFormatError(f"row {index}: duplicate child {token!r}")
            siblings[key] = node
            nodes.append(node)
            depths.append(depths[parent] + 1)
            if token is REPEAT:
                trie._repeat_reach = max(trie._repeat_reach, depths[-1])
            if end is not None:
                trie._len += 1
        return trie

    # ----------------------------------------------------------------- invariants
    def _check(self) -> None:
        """Verify the invariants; tests call this after building.

        Raises:
            AssertionError: where an invariant does not hold.
        """
        assert IGNORE not in self._root.children, "IGNORE cannot be an activating token"
        ends, reach = 0, 0
        for path, node in self.walk():
            assert node.token is IGNORE or isinstance(node.token, (str, NodeKind)), node.token
            if node.token is REPEAT:
                reach = max(reach, len(path))
            key_of = self._key
            assert node.children.keys() == {key_of(c.token) for c in node.children.values()}
            assert node.end is not None or node.children, f"dangling path {path!r}"
            if node.end is not None:
                ends += 1
                assert math.isfinite(node.end)
        assert ends == self._len, f"{ends} path ends but length {self._len}"
        assert reach == self._repeat_reach, f"REPEAT nodes reach {reach}, recorded {self._repeat_reach}"
