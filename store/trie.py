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

Traversals are iterative, so graphs built from long contexts never hit the recursion limit.

>>> trie = NeuronTrie()
>>> trie.insert((" except", IGNORE, " everyone"), activation=0.9, importances=(0.0, 0.95))
>>> trie.predict([" everyone", " is", " here", " except"])
[0.0, 0.0, 0.0, 0.0]
>>> trie.predict([" everyone", " else", " except"])
[0.0, 0.0, 0.9]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from store.tokens import normalize

IGNORE: Final = None
"""The token of an ignore node: some token must stand here, but which one does not matter."""

Token = str | None
Path = tuple[Token, ...]
MatchRule = Literal["all", "greedy"]


class PathNotFound(KeyError):
    """A path that the trie does not hold."""


class TrieFormatError(ValueError):
    """Serialised trie rows that do not describe a valid trie."""


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

    # ----------------------------------------------------------------- building
    def _key(self, token: Token) -> Token:
        if token is IGNORE or not self.normalized:
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
                position whose token does not matter.
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
        for depth, token in enumerate(path):
            key = self._key(token)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Node(token=token)
            weight = activation if depth == 0 else importances[depth - 1]
            child.importance = max(child.importance, weight)
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
        """Activating tokens with their largest normalised activation, strongest first."""
        tokens = {c.token: c.importance for c in self._root.children.values() if c.token}
        return dict(sorted(tokens.items(), key=lambda kv: -kv[1]))

    def context_tokens(self) -> dict[str, float]:
        """Context tokens (IGNORE excluded) with their largest importance, most important first."""
        best: dict[str, float] = {}
        for path, node in self.walk():
            if len(path) > 1 and node.token is not IGNORE:
                best[node.token] = max(best.get(node.token, -math.inf), node.importance)
        return dict(sorted(best.items(), key=lambda kv: -kv[1]))

    def depth(self) -> int:
        """The length of the longest path."""
        return max((len(path) for path, _ in self.walk()), default=0)

    # ----------------------------------------------------------------- prediction
    def _matching(self, keys: Sequence[Token], i: int, rule: MatchRule) -> Iterator[Node]:
        """Every node on a path that matches token ``i`` and the tokens before it."""
        start = self._root.children.get(keys[i])
        if start is None:
            return
        yield start
        frontier = [start]
        j = i - 1
        while frontier and j >= 0:
            following: list[Node] = []
            for node in frontier:
                exact = node.children.get(keys[j])
                if exact is not None:
                    following.append(exact)
                if exact is None or rule == "all":
                    ignore = node.children.get(IGNORE)
                    if ignore is not None:
                        following.append(ignore)
            yield from following
            frontier = following
            j -= 1

    def predict(self, tokens: Sequence[str], rule: MatchRule = "all") -> list[float]:
        """Predicted normalised activation for every token of a text.

        Args:
            tokens: the text's tokens, as strings, in order.
            rule: ``"all"`` follows every matching path (the paper); ``"greedy"`` follows the
                exact child else the IGNORE child, never both (the reference code).

        Returns:
            One value per token: the largest end activation of a path that matches the token and
            the tokens before it, or 0.0.
        """
        keys = [self._key(t) for t in tokens]
        return [max((n.end for n in self._matching(keys, i, rule) if n.end is not None), default=0.0)
                for i in range(len(keys))]

    def matches(self, tokens: Sequence[str], rule: MatchRule = "all") -> list[list[Node]]:
        """For every token of a text, the nodes where a path matching it ends (its path ends).

        A fit uses this to see which paths a text's tokens would take (e.g. to calibrate ENDs).

        >>> trie = NeuronTrie()
        >>> trie.insert((" b",), 0.2); trie.insert((" b", " a"), 0.9, (0.9,))
        >>> [[n.end for n in ends] for ends in trie.matches([" a", " b", " b"])]
        [[], [0.2, 0.9], [0.2]]
        """
        keys = [self._key(t) for t in tokens]
        return [[n for n in self._matching(keys, i, rule) if n.end is not None]
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
        is None for IGNORE nodes, ``end`` is None where no path ends.
        """
        rows: list[list] = [[-1, "", 0.0, None]]
        stack: list[tuple[int, Node]] = [(0, self._root)]
        while stack:
            parent_index, node = stack.pop()
            for child in node.children.values():
                rows.append([parent_index, child.token, round(child.importance, 4),
                             None if child.end is None else round(child.end, 4)])
                stack.append((len(rows) - 1, child))
        return rows

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], normalized: bool = False) -> NeuronTrie:
        """Rebuild a trie from :meth:`to_rows` output.

        Raises:
            TrieFormatError: if the rows do not describe a trie (bad parent, duplicate child,
                IGNORE activating token, non-numeric or non-finite values).
        """
        trie = cls(normalized=normalized)
        if not rows or list(rows[0][:2]) != [-1, ""]:
            raise TrieFormatError("row 0 must be the root [-1, '', 0, null]")
        nodes: list[Node] = [trie._root]
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
            if token is not IGNORE and not isinstance(token, str):
                raise TrieFormatError(f"row {index}: token must be a string or null")
            if parent == 0 and token is IGNORE:
                raise TrieFormatError(f"row {index}: an activating token cannot be IGNORE")
            node = Node(token=token, importance=importance, end=end)
            key = trie._key(token)
            siblings = nodes[parent].children
            if key in siblings:
                raise TrieFormatError(f"row {index}: duplicate child {token!r}")
            siblings[key] = node
            nodes.append(node)
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
        ends = 0
        for path, node in self.walk():
            key_of = self._key
            assert node.children.keys() == {key_of(c.token) for c in node.children.values()}
            assert node.end is not None or node.children, f"dangling path {path!r}"
            if node.end is not None:
                ends += 1
                assert math.isfinite(node.end)
        assert ends == self._len, f"{ends} path ends but length {self._len}"
