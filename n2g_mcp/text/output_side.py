"""The words of the output side and of exports: summaries of find_by_output, output_effects and
export_neuron, the line get_graph and top_activations add, and their refusals.

Re-exported by ``n2g_mcp.text`` like the other word modules.
"""

from __future__ import annotations

from collections.abc import Sequence

from n2g_mcp.output_results import FindByOutputOutput, NeuronExport, OutputEffectsOutput
from n2g_mcp.text.pieces import count, number, tok
from store.effects import EditEffect
from store.logitfile import OutputTokens, TokenValue

SHOWN = 6
"""Tokens a summary line shows each way."""


def _listed(items: Sequence[TokenValue]) -> str:
    return ", ".join(f"{tok(t.token)} {t.value:+.2f}" for t in items[:SHOWN]) or "none"


def output_line(output: OutputTokens | None) -> str | None:
    """The line get_graph and top_activations add: what the neuron writes (None without the file)."""
    if output is None:
        return None
    return (f"Writes (direct path, logit change per unit of activation): promotes {_listed(output.promoted)}; "
            f"suppresses {_listed(output.suppressed)}. output_effects measures it on the model.")


def find_by_output(out: FindByOutputOutput) -> str:
    asked = [f"{', '.join(map(tok, out.promotes))} promoted"] if out.promotes else []
    asked += [f"{', '.join(map(tok, out.suppresses))} suppressed"] if out.suppresses else []
    what = " and ".join(asked)
    if not out.results:
        return (f"No neuron of {out.model} has {what} among its top {out.top_k} output tokens. Try fewer tokens, "
                "exact=false, or find_neurons on a text where the token is predicted.")
    first, end = out.offset, out.offset + len(out.results)
    lines = [f"{count(out.total, 'neuron')} of {out.model} with {what} among their top {out.top_k} output "
             f"tokens (ranked by {out.ranked_by}); {first + 1}-{end}:"]
    for h in out.results:
        size = f"{h.strength:.2f}/unit" + ("" if h.at_max is None else f", {h.at_max:.2f} at max")
        graph = f"; fires on {', '.join(map(tok, h.activating_tokens[:4]))}" if h.activating_tokens else \
            ("" if h.has_graph else "; no graph")
        lines.append(f"- {h.id}: {', '.join(map(tok, h.matched))} at rank {', '.join(map(str, h.ranks))} "
                     f"({size}); promotes {', '.join(map(tok, h.promoted[:4]))}{graph}")
    if out.next_cursor:
        lines.append(f"More: call find_by_output with cursor={out.next_cursor!r}.")
    lines.append("Next: top_activations or get_graph for what makes one fire; output_effects to measure "
                 "what it writes.")
    return "\n".join(lines)


def _edit(e: EditEffect) -> str:
    rose = ", ".join(f"{tok(s.token)} {s.prob_clean:.3f}->{s.prob_edited:.3f}" for s in e.rose[:4])
    fell = ", ".join(f"{tok(s.token)} {s.prob_clean:.3f}->{s.prob_edited:.3f}" for s in e.fell[:4])
    return (f"{e.kind} (set to {e.value:.3g}, change {e.activation_change:+.3g}): KL {e.kl:.3g} nats; "
            f"direct-path correlation {number(e.direct_correlation)}, overlap {e.direct_overlap}; "
            f"rose {rose}; fell {fell}")


def output_verdict(out: OutputEffectsOutput) -> str:
    """One sentence on whether the direct path is what the neuron's firing does."""
    corr = [c for c in (out.zeroed.direct_correlation, out.raised.direct_correlation) if c is not None]
    if not corr:
        return "The edits changed nothing measurable."
    best = max(corr)
    if best >= 0.7:
        return "The direct path is most of what it does here: the weights' lists describe its output."
    if best >= 0.3:
        return "The direct path is part of what it does here; later layers add to it."
    return "The direct path is not what it does here: it acts through later layers (attention, MLPs)."


def output_effects(out: OutputEffectsOutput) -> str:
    lines = [f"{out.id} of {out.model} on its top {out.windows} windows (edit at the pivot, where it fires; "
             f"mean activation there {out.activation_clean:.3g}, corpus max {out.max_activation:.3g}):",
             f"Direct path (weights): promotes {_listed(out.static.promoted)}; suppresses "
             f"{_listed(out.static.suppressed)}.",
             "- " + _edit(out.zeroed), "- " + _edit(out.raised), output_verdict(out)]
    return "\n".join(lines)


def export_neuron(out: NeuronExport, path: str) -> str:
    lines = [f"{out.id} of {out.modelId} as a Neuronpedia-style record: {count(len(out.activations), 'window')}, "
             f"{len(out.pos_str)} promoted and {len(out.neg_str)} suppressed tokens, "
             f"{count(len(out.explanations), 'explanation')}.",
             f"Exported to {path} (also attached as a resource)."]
    return "\n".join(lines)


def exported(rows: int, fmt: str, path: str, hint: str | None) -> str:
    """The line a list tool's answer adds when it was also exported."""
    note = f" {hint}" if rows == 0 and hint else ""
    return f"Exported {count(rows, 'row')} as {fmt} to {path} (attached as a resource).{note}"


def not_a_token(token: str, model: str, exact: bool = False) -> str:
    how = "spelled exactly (exact=true)" if exact else "case- and space-insensitively"
    return (f"{tok(token)} is not one token of {model}'s vocabulary ({how}); pass single tokens with their "
            "leading space, e.g. ' import'. find_neurons shows how a text tokenises.")


EACH_FOR_EXPORT = "ablate_neurons exports a row per neuron ablated alone: pass each=true."
INSTEAD_OF_MEASURING = "get_graph and top_activations show its output tokens from the weights without running it."
NO_OUTPUT_TOKENS = "pass promotes or suppresses (tokens such as ' import')"
MEASURING_OUTPUT = "measuring the neuron's output on its top windows (the model loads on first use)"


def no_logits(model: str, filename: str, stores_dir: str) -> str:
    return (f"find_by_output needs the output-token file of {model} ({filename} in {stores_dir}), which is not "
            f"there; its operator writes it with `n2g logits --model {model}` (seconds to minutes). Use "
            "output_effects on one neuron meanwhile.")


def dead_neuron(neuron: str, model: str) -> str:
    return (f"{neuron} of {model} never fires positively in the scanned corpus, so it has no top windows to "
            "measure on; get_graph and top_activations show its output tokens from the weights.")


def nothing_to_export(model: str, neuron: str, build: str) -> str:
    return (f"nothing is known of {neuron} of {model} here: no whole-model scan and no stored graph. Call "
            f"{build} first, or ask its operator to run `n2g scan --model {model}`.")


def graph_explanation(activating: dict[str, float], context: dict[str, float], limit: int = 8) -> str:
    """A graph as a one-line explanation: what it fires on, and in what context."""
    fires = ", ".join(f"{tok(t)} ({v:.2f})" for t, v in list(activating.items())[:limit]) or "nothing"
    after = ", ".join(tok(t) for t in list(context)[:limit])
    return f"N2G graph: fires on {fires}" + (f"; context {after}" if after else "")


def export_source(from_scan: bool, logits: str | None, graph: bool) -> str:
    parts = ["n2g-mcp export", "activations: " + ("the whole-model scan's top windows (pivot values only)"
                                                   if from_scan else "the stored graph's examples (pivot values only)")]
    parts.append(f"pos/neg tokens: {logits} (direct path through the final norm's scale and the unembedding)"
                 if logits else "pos/neg tokens: none (no output-token file; `n2g logits` writes it)")
    parts.append("explanation: its N2G graph with held-out fidelity" if graph else
                 "explanation: none (no graph stored)")
    return "; ".join(parts)


def logits_mismatch(name: str, holds: str, shape: tuple[int, int], model: str) -> str:
    return (f"{name} holds the output tokens of {holds} ({shape[0]} x {shape[1]} neurons), not of {model}'s "
            f"neurons, so they are not shown; its operator writes the right one with `n2g logits --model {model}`")
