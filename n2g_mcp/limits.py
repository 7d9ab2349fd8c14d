"""How much one tool call may ask for and return: the caps the tools state and enforce.

Clients reject results over about 25k tokens, and the live model runs one request at a time, so
every input that scales work or output has a cap, named once here and quoted in the tools'
descriptions.
"""

MAX_TEXT_CHARS = 20_000
"""Longest text predict_activations takes; longer texts are split by the agent."""
MAX_COMPARE_TOKENS = 4_096
"""Most tokens predict_activations(compare=true) runs through the real model in one call."""
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
"""Most neurons ablate_neurons(each=true) ablates one at a time (one forward pass each)."""
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
