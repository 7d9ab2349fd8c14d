"""Everything an agent reads: the server's instructions, the text summary of each tool's result,
and the wording of errors, in one package (one module a kind: ``pieces``, ``progress``,
``refusals``, ``summaries``, ``explain`` for why a prediction fired and for scoring
explanations, ``neighbours`` for find_similar_neurons' co-activation, and ``output_side`` for
the output-side tools and exports; every name is re-exported here, so callers write
``text.no_graph(...)``).

In: the result models of ``n2g_mcp.outputs`` (and, where the summary repeats the question, the
query's arguments). Out: a few lines of plain text. Keeping the words here, apart from the
queries, lets them be read and changed in one place; the structured result carries the same
facts for a program.

Conventions: tokens are shown quoted (``' except'``) so leading spaces and newlines are visible;
every message that refuses something says what to call next.
"""

from n2g_mcp.text.output_side import *  # noqa: F403
from n2g_mcp.text.pieces import *  # noqa: F403 - the package is the one home of the words
from n2g_mcp.text.explain import *  # noqa: F403
from n2g_mcp.text.neighbours import *  # noqa: F403
from n2g_mcp.text.progress import *  # noqa: F403
from n2g_mcp.text.refusals import *  # noqa: F403
from n2g_mcp.text.summaries import *  # noqa: F403

# --------------------------------------------------------------------- the server's instructions
INSTRUCTIONS = """\
Neuron to Graph (N2G): each neuron of a transformer language model is summarised as a graph of
token paths: the tokens it fires on (activating) and the earlier tokens that make it fire
(context). Neurons are named L{layer}/N{neuron}; activations are normalised to the neuron's
largest activation (1.0), and a token "fires" at >= 0.5.
Start with list_models. Find neurons by behaviour with search_graphs (tokens, or repeated=true for
in-context/induction-like neurons); read one with get_graph and top_activations; build one that is
not stored with build_graph; test a hypothesis with predict_activations(compare=true) on texts
that should and should not fire it, or at corpus scale with test_hypothesis; score an explanation
in words with score_explanation (you predict its scoring set, beside the graph); find duplicates with
find_similar_neurons (also the neurons that fire with one, whatever their graphs name); draw with
render_graph_dot. Without a graph, ask the model itself:
top_activations works for every neuron (from the whole-model scan), find_neurons lists what fires
at a token of any text, find_induction_neurons runs a behavioural probe across all layers,
ablate_neurons checks causally that neurons matter, and steer_neurons shows what the model writes
with neurons clamped on. What a neuron writes: get_graph and top_activations list the tokens its
output promotes and suppresses (from the weights), find_by_output finds neurons by a promoted
token, output_effects measures it on the model. List tools take format='csv' or 'jsonl' to hand
their rows to other tools as a file (export://); export_neuron writes one neuron's record. The
prompts walk through these workflows."""
"""What the server tells a client on initialize: the map of the tools."""
