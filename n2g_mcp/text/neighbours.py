"""The words of find_similar_neurons' co-activation: its summary lines and its refusals."""

from __future__ import annotations

from n2g_mcp.outputs import Coactivated, CoactiveHit
from n2g_mcp.text.pieces import count, tokens

COACTIVATING = "finding the neurons that fire with it (the model loads on first use)"
MODEL_NOT_ASKED = "run_model=false was passed"
COACTIVATION_NEEDS_TARGET = ("by='coactivation' ranks the neurons that fire with one neuron: pass both layer "
                             "and neuron (without them, by='tokens' lists the most similar pairs of graphs)")


def no_scan_for_coactivation(model: str, filename: str, stores_dir: str) -> str:
    return (f"co-activation needs the whole-model scan of {model} ({filename} in {stores_dir}), which is not "
            f"there; its operator writes it with `n2g scan --model {model}`. by='tokens' compares the graphs' "
            "token sets without it.")


def no_graph_for_tokens(target: str) -> str:
    return (f"{target} has no stored graph, so no token-set overlap was computed: the neighbours below are by "
            "co-activation alone (build_graph makes its graph).")


def coactivation_skipped(reason: str) -> str:
    return f"co-activation was not measured: {reason}"


def _hit(h: CoactiveHit, target: str, top: int) -> str:
    shared = (f"holds {h.shared_tokens} of {target}'s {top} top windows peaking at the same token "
              f"({h.shared_windows} with the peak anywhere)")
    head = f"- {h.id}: r {h.correlation:.2f}, {shared}" if h.correlation is not None else f"- {h.id}: {shared}"
    graph = (f"; graph fires on {tokens(h.activating_tokens, 5)}" + (f", F1 {h.f1:.2f}" if h.f1 is not None else "")
             if h.has_graph else "; no graph stored")
    return head + graph


def coactivation(c: Coactivated, target: str) -> list[str]:
    """The co-activation part of find_similar_neurons' summary."""
    if c.source == "model":
        basis = (f"by Pearson r of activations on the model over {c.tokens:,} tokens (its {c.top_windows} top "
                 f"windows and {c.random_windows} random build-split windows)")
        order = "most correlated first"
    else:
        basis = (f"by the top windows they share with it in the whole-model scan (no model run: {c.why_scan}; "
                 "with the model, by='coactivation' measures the correlation)")
        order = "most shared first"
    if c.heldout_left_out:
        basis += f"; {count(c.heldout_left_out, 'top window')} of held-out documents left out"
    layers = "every layer" if len(c.layers) > 1 and c.layers == list(range(c.layers[-1] + 1)) else \
        f"layers {', '.join(map(str, c.layers))}"
    if not c.results:
        return [f"No neuron in {layers} fires with {target}, {basis}."]
    return [f"Neurons in {layers} that fire with {target}, {basis}, {order}:"] + \
        [_hit(h, target, c.top_windows) for h in c.results]
