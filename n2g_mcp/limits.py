"""How much one tool call may ask for and return, and what it gets when it does not say.

Clients reject results over about 25k tokens, and the live model runs one request at a time, so
every input that scales work or output has a cap, named once here and quoted in the tools'
descriptions. The defaults below are the tools' and the query library's alike; those that belong
to the store are named there: the similarity threshold and count (``store.similarity``
``PAPER_THRESHOLD``, ``SIMILAR_LIMIT``), the nodes drawn (``store.render.NODES_DRAWN``) and the
induction probe's size (``store.probes.PROBE_SEQUENCES``, ``PROBE_LENGTH``, ``PROBE_SEEDS``).
"""

MAX_TEXT_CHARS = 20_000
"""Longest text predict_activations takes; longer texts are split by the agent."""
MAX_COMPARE_TOKENS = 4_096
"""Most tokens predict_activations(compare=true) runs through the real model in one call."""
MAX_TEXTS = 16
"""Most texts predict_activations takes in one call (together within MAX_TEXT_CHARS, and within
MAX_COMPARE_TOKENS with compare=true)."""
MAX_LIMIT = 100
"""Most results one call returns."""
MAX_DOT_CHARS = 40_000
"""Largest DOT text returned; a bigger drawing is redrawn with fewer nodes."""
MAX_NODES = 500
"""Largest node cap an agent may ask render_graph_dot for."""
TOKENS_SHOWN = 25
"""Activating and context tokens shown per graph by build_graph and get_graph."""
HIT_TOKENS = 8
"""Activating and context tokens shown per search hit."""
MAX_FIRING_ROWS = 100
"""Most rows of the firing list predict_activations returns (the per-token arrays have all)."""
MAX_ABLATE = 256
"""Most neurons ablate_neurons takes in one call."""
MAX_PATTERN_CHARS = 500
"""Longest pattern test_hypothesis takes."""
MAX_EACH = 32
"""Most neurons ablate_neurons(each=true) ablates one at a time (one more run of the text each)."""
MAX_CONTROLS = 32
"""Most random control draws ablate_neurons compares with (one more run of the text each)."""
MAX_STEER = 32
"""Most neurons steer_neurons clamps in one call."""
MAX_STEER_PROMPT_TOKENS = 256
"""Longest prompt steer_neurons takes, in tokens (every generated token re-runs the whole text)."""
MAX_NEW_TOKENS = 64
"""Most tokens steer_neurons generates for each continuation."""
MAX_STEER_SCALE = 20.0
"""Largest clamp steer_neurons takes, as a multiple of the neuron's corpus max (either sign)."""
MAX_SEEDS = 8
"""Most seeds (sets of random sequences) find_induction_neurons merges."""
MAX_SEED = 2**32 - 1
"""Largest seed find_induction_neurons and ablate_neurons take."""
MAX_PAIR_VISITS = 2_000_000
"""Most candidate pairs one all-pairs find_similar_neurons call visits below the pairs the index
keeps (``store.similarity.PairBudget``): a few seconds of one core, in memory bounded by its
limit. Where it is reached the answer says so and how to narrow the search."""


ASSUMED_TOKENS_PER_S = 150.0
"""Full-model tokens a second a long call's first time estimate assumes before the server has
timed the model itself (then its measured rate is used). SmolLM2-135M on CPU: issue 27's
ablate_neurons(each=true) forwarded 45,360 tokens in 258 s (176/s); on this 2-core CPU under a
load of 9, ablations ran at 50 (3 runs) to 86 (10 runs sharing passes) tokens/s. A GPU runs
thousands: there the first estimate errs long."""
CHARS_PER_TOKEN = 4.0
"""Characters a token a given text's first time estimate assumes, before the model has read it
(English prose in SmolLM2's tokenizer: about 4.5)."""


# --------------------------------------------------------------------- defaults
SEARCH_PAGE = 20
"""Results per page of search_graphs."""
EXAMPLES_PAGE = 10
"""Examples per page of top_activations."""
FOUND_NEURONS = 20
"""Neurons find_neurons returns."""
INDUCTION_NEURONS = 50
"""Neurons find_induction_neurons returns."""
STEER_SCALE = 2.0
"""steer_neurons' clamp, as a multiple of each neuron's corpus max."""
NEW_TOKENS = 24
"""Tokens steer_neurons generates for each continuation."""


# --------------------------------------------------------------------- the output side (issue 31)
OUTPUT_SHOWN = 10
"""Promoted and suppressed tokens get_graph, top_activations and output_effects show each way."""
MAX_EFFECT_WINDOWS = 32
"""Most top windows output_effects measures on (one forward pass of three rows each)."""
EFFECT_WINDOWS = 8
"""Top windows output_effects measures on by default."""
EFFECT_SCALE = 2.0
"""output_effects raises the neuron to this multiple of its corpus max at the pivot."""
EXPORT_WINDOWS = 20
"""Top windows export_neuron writes by default (at most the scan's top-k)."""
