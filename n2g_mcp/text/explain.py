"""The words of explaining a neuron: why a prediction fired, several texts at once, and
score_explanation's summaries and refusals."""


from __future__ import annotations

from collections.abc import Sequence

from n2g_mcp.scoring_outputs import ScoreExplanationOutput
from n2g_mcp.text.pieces import tok

GAP = "…"
"""A position of a path where any token may stand."""


def via(path: Sequence[str | None] | None) -> str:
    """Why a token is predicted: `` via ' everyone' … ' except'`` (the matched path in text
    order), or nothing where no path matched."""
    if not path:
        return ""
    return " via " + " ".join(GAP if t is None else tok(t) for t in path)


def too_many_texts(n: int, limit: int) -> str:
    return f"{n} texts; predict_activations takes at most {limit} in one call. Split them over several calls."


def texts_too_long(chars: int, limit: int) -> str:
    return (f"the texts have {chars} characters together, over the limit of {limit} for one call; "
            "split them over several calls")


# --------------------------------------------------------------------- score_explanation
DRAWING_SET = "Drawing the scoring set (the first time, the model loads and two forward passes run)"
INSTEAD_OF_SCORING = ("Test your explanation on the graph alone with predict_activations, or at corpus scale "
                      "where the model runs.")
KIND_NAMES = {"all": "all windows", "top_and_random": "top and random (OpenAI's score)", "top": "top",
              "interval": "interval", "random": "random", "out_of_context": "top tokens out of context"}
CLOSE = 0.05
"""Correlations closer than this read as "about the same"."""


def predictions_count(given: int, windows: int) -> str:
    return (f"{given} predictions for a set of {windows} windows; send one entry per window, in the set's "
            "order (call score_explanation without predictions to see the set again)")


def prediction_length(number: int, given: int, tokens: int) -> str:
    return (f"window {number} has {tokens} tokens but its prediction has {given} values; send one value per "
            "token, or an object {\"token index\": value} naming only the tokens above 0")


def prediction_index(number: int, key: str, tokens: int) -> str:
    return f"window {number}: {key!r} is not a token index of it (0 to {tokens - 1})"


def prediction_range(number: int, scale: int) -> str:
    return f"window {number}: predictions run from 0 (silent) to {scale} (the neuron's strongest)"


def nothing_to_score(neuron: str, reason: str) -> str:
    return f"{neuron} cannot be scored: {reason}. Pick another neuron (top_activations shows what fires it)."


def set_changed(given: str, now: str, seed: int) -> str:
    return (f"set_id {given!r} is not the set seed {seed} draws now ({now!r}: the scan file or the model "
            "changed); call score_explanation without predictions to get the set again")


def _correlation(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def scoring_set(out: ScoreExplanationOutput, call: str) -> str:
    """Step 1: the set, and how to send predictions back."""
    counts = ", ".join(f"{n} {KIND_NAMES[k]}" for k, n in out.counts.items() if n)
    empty = (f"; no window found with a peak in {', '.join(out.empty_intervals)} of its max"
             if out.empty_intervals else "")
    lines = [
        f"Scoring set for {out.id} of {out.model} (seed {out.seed}, set_id {out.set_id!r}): {len(out.windows)} "
        f"windows, shuffled ({counts}{empty}).",
        "Predict from your explanation alone, for every token, the neuron's activation from 0 (silent) to 10 "
        "(its strongest), as a simulator would. Then call " + call + ", explanation='your words', "
        "predictions=[...]) with one entry per window, in this order: a list of one integer per token, or "
        "an object {\"token index\": value} naming only the tokens above 0 (e.g. {\"5\": 10}).",
    ]
    for w in out.windows:
        lines.append(f"W{w.number}: " + " ".join(f"{i}:{tok(t)}" for i, t in enumerate(w.tokens)))
    return "\n".join(lines)


def scored(out: ScoreExplanationOutput) -> str:
    """Step 2: the scores, yours beside the graph's, and the windows predicted worst."""
    overall = out.scores[0]
    mine, graph = overall.explanation, overall.graph
    said = f" {out.explanation!r}" if out.explanation else ""
    lines = [f"{out.id} of {out.model}: your explanation{said} on {overall.windows} windows ({mine.tokens} tokens): "
             f"correlation {_correlation(mine.correlation)} (precision {_correlation(mine.precision)}, recall "
             f"{_correlation(mine.recall)}, F1 {_correlation(mine.f1)})."]
    if graph is None:
        lines.append("No graph is stored for it, so none is scored beside you (build_graph builds one).")
    else:
        lines.append(f"Its graph on the same tokens: correlation {_correlation(graph.correlation)} "
                     f"(F1 {_correlation(graph.f1)}). {_verdict(mine.correlation, graph.correlation)}")
    by_kind = [f"{KIND_NAMES[k.kind]} {_correlation(k.explanation.correlation)}"
               + (f" / {_correlation(k.graph.correlation)}" if k.graph is not None else "") for k in out.scores[1:]]
    undefined = any(k.explanation.correlation is None or (k.graph is not None and k.graph.correlation is None)
                    for k in out.scores[1:])
    lines.append("Correlation by kind of window (yours" + (" / the graph's" if graph is not None else "") + "): "
                 + "; ".join(by_kind) + "." + (" n/a: the prediction or the neuron is constant there (on random "
                                               "windows, usually both silent: nothing to correlate)." if undefined
                                               else ""))
    if out.worst:
        lines.append("Worst predicted (0-10: yours / real" + (" / graph" if graph is not None else "") + "):")
        for m in out.worst:
            graph_value = f" / {m.graph:.1f}" if m.graph is not None else ""
            lines.append(f"- W{m.number} [{m.kind}] at {tok(m.token)}: {m.predicted:.1f} / {m.actual:.1f}"
                         f"{graph_value}: {m.text!r}")
    lines.append("Next: revise the explanation where it missed and score again with the same seed, or with "
                 "another seed for fresh windows.")
    return "\n".join(lines)


def _verdict(mine: float | None, graph: float | None) -> str:
    if mine is None:
        return "Your predictions are constant, so their correlation is undefined: predict where it fires."
    if graph is None:
        return "The graph's prediction is constant here, so its correlation is undefined."
    if mine - graph >= CLOSE:
        return f"Your words predict it better than the graph, by {mine - graph:.2f}."
    if graph - mine >= CLOSE:
        return (f"The graph predicts it better than your words, by {graph - mine:.2f}: read its paths for what "
                "you missed.")
    return "Your words and the graph predict it about as well."
