"""The query behind score_explanation: draw a neuron's scoring set, then score predictions on it.

Step 1 (no predictions): the set (``store.scoring.draw_set``) from the model's scan file, its
windows measured with the live model; the agent gets the tokens, not the activations. Step 2
(with predictions): the same set (kept here, or drawn again from the seed), the agent's 0-10
predictions and the stored graph's own prediction scored against the real activations
(``store.scoring.score_set``). Slow the first time (two batched forward passes over about a
hundred windows); the server calls it from a worker thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from n2g_mcp import text
from n2g_mcp.resolve import Resolver
from n2g_mcp.scoring_outputs import KindScores, Miss, ScoreExplanationOutput, SetWindowView
from store.errors import BadArgument
from store.examples import ExampleRef, PrunedRef, scan_problem
from store.graph import NeuronGraph
from store.names import keyed_id
from store.progress import Progress
from store.scanfile import ScanFile
from store.scoring import NothingToScore, ScoringSet, draw_set, score_set

SCALE = 10
"""The agent's scale: 0 (silent) to 10 (the neuron's largest activation), as OpenAI quantises."""
SETS_KEPT = 16
"""Scoring sets kept between the two steps (least recently used dropped first)."""

Prediction = Sequence[int] | Mapping[str, int]
"""One window's predictions: one value per token, or ``{"token index": value}`` for the tokens
predicted above 0 (the others are 0)."""


def read_predictions(predictions: Sequence[Prediction], scoring: ScoringSet) -> list[list[float]]:
    """The agent's predictions on the 0-1 scale, one row per window of the set.

    Raises:
        BadArgument: for a count of windows or tokens that does not match the set, an index that
            is not a token of its window, or a value outside 0-10, naming the window.

    >>> from store.scoring import SetWindow
    >>> w = SetWindow("top", 0, 0, (1, 2, 3), ("a", "b", "c"), (0.0, 1.0, 0.0))
    >>> s = ScoringSet(0, 0, 0, 1.0, (w, w), ())
    >>> read_predictions([[0, 10, 0], {"1": 5}], s)
    [[0.0, 1.0, 0.0], [0.0, 0.5, 0.0]]
    """
    windows = scoring.windows
    if len(predictions) != len(windows):
        raise BadArgument(text.predictions_count(len(predictions), len(windows)))
    rows = []
    for number, (given, window) in enumerate(zip(predictions, windows, strict=True), start=1):
        n = len(window.tokens)
        if isinstance(given, Mapping):
            row = [0.0] * n
            for key, value in given.items():
                index = int(key) if str(key).strip().isdigit() else -1
                if not 0 <= index < n:
                    raise BadArgument(text.prediction_index(number, str(key), n))
                row[index] = float(value)
        else:
            if len(given) != n:
                raise BadArgument(text.prediction_length(number, len(given), n))
            row = [float(v) for v in given]
        if any(not 0 <= v <= SCALE for v in row):
            raise BadArgument(text.prediction_range(number, SCALE))
        rows.append([v / SCALE for v in row])
    return rows


def _graph_windows(graph: NeuronGraph | None, scan: ScanFile) -> list[int]:
    """The scan windows a graph was built on (its training examples), where its references point
    into this scan; a set leaves them out of its top windows so the graph is scored on others."""
    if graph is None or scan_problem(graph.scan, scan) is not None:
        return []
    return sorted({e.window for e in [*graph.examples, *graph.pruned]
                   if isinstance(e, ExampleRef | PrunedRef) and e.split != "test"})


def _marked(tokens: Sequence[str], position: int) -> str:
    return "".join(tokens[:position]) + "[[" + tokens[position] + "]]" + "".join(tokens[position + 1:])


class ScoringQueries(Resolver):
    """score_explanation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sets: OrderedDict[tuple, ScoringSet] = OrderedDict()
        self._sets_lock = threading.Lock()

    def scoring_set(self, model: str, layer: int, neuron: int, seed: int, graph: NeuronGraph | None,
                    progress: Progress | None = None) -> ScoringSet:
        """A neuron's scoring set for a seed: kept from an earlier call, else drawn (and kept).

        Raises:
            NotFound: where the model has no scan file.
            Unavailable: where the model cannot run here.
            BadArgument: where the neuron never fires in the scan.
        """
        scan = self.need_scan(model, "score_explanation")
        key = (model, layer, neuron, seed, str(scan.path), scan.meta.get("created"), scan.meta.get("windows_key"))
        with self._sets_lock:
            if key in self._sets:
                self._sets.move_to_end(key)
                return self._sets[key]
        spec = self.spec(model, "run the real neuron", text.INSTEAD_OF_SCORING)
        calls = iter(("measuring candidate windows", "measuring the windows of the set"))

        def measure(rows: list[list[int]]) -> list[list[float]]:
            if progress is not None:
                progress(0, 1, next(calls, "measuring"))
            return self.live.window_activations(spec, layer, neuron, rows)

        try:
            drawn = draw_set(scan, layer, neuron, seed, measure, exclude=_graph_windows(graph, scan))
        except NothingToScore as exc:
            raise BadArgument(text.nothing_to_score(keyed_id(model, layer, neuron), str(exc))) from exc
        with self._sets_lock:
            self._sets[key] = drawn
            while len(self._sets) > SETS_KEPT:
                self._sets.popitem(last=False)
        return drawn

    def score_explanation(self, model: str | None, layer: int, neuron: int, seed: int = 0,
                          predictions: Sequence[Prediction] | None = None, set_id: str | None = None,
                          explanation: str | None = None,
                          progress: Progress | None = None) -> ScoreExplanationOutput:
        """Without predictions, the neuron's scoring set; with them, their scores beside the graph's."""
        model = self.model(model)
        self.check_range(model, layer, neuron)
        graph = self.stored(model, layer, neuron)
        scoring = self.scoring_set(model, layer, neuron, seed, graph, progress)
        if set_id is not None and set_id != scoring.id:
            raise BadArgument(text.set_changed(set_id, scoring.id, seed))
        out = ScoreExplanationOutput(
            id=keyed_id(model, layer, neuron), model=model, seed=seed, set_id=scoring.id, explanation=explanation,
            counts=scoring.counts(), empty_intervals=[f"{a:g}-{b:g}" for a, b in scoring.empty_intervals],
            has_graph=graph is not None)
        if predictions is None:
            out.windows = [SetWindowView(number=i + 1, tokens=list(w.tokens)) for i, w in enumerate(scoring.windows)]
            return out
        rows = read_predictions(predictions, scoring)
        graph_rows = None if graph is None else [graph.predict(list(w.tokens)) for w in scoring.windows]
        result = score_set(scoring, rows, graph_rows)
        out.scores = [KindScores(kind=k.kind, windows=k.windows, explanation=k.scores, graph=k.graph)
                      for k in result.kinds]
        out.window_kinds = [w.kind for w in scoring.windows]
        for miss in result.worst:
            tokens = scoring.windows[miss.number].tokens
            out.worst.append(Miss(
                number=miss.number + 1, kind=miss.kind, text=_marked(tokens, miss.position),
                token=tokens[miss.position], position=miss.position, predicted=miss.predicted * SCALE,
                actual=miss.actual * SCALE, graph=None if miss.graph is None else miss.graph * SCALE))
        return out
