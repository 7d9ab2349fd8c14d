"""The neuron queries behind the MCP tools, as a plain library: arguments in, result models out.

:class:`Queries` is every query of the server over one stores directory, assembled from four
rooms over one shared resolver (``n2g_mcp.resolve``):

- ``n2g_mcp.store_queries``: list, read, search, compare, draw (the stores alone, no torch);
- ``n2g_mcp.live_queries``: predict (and compare with the real neuron), build;
- ``n2g_mcp.probe_queries``: the whole-model probes (find_neurons, induction, ablation, hypothesis);
- ``n2g_mcp.scoring_queries``: score_explanation (a scoring set, then predictions scored on it).
- ``n2g_mcp.output_queries``: what neurons write (find_by_output, output_effects) and a unit's export.

Each public method answers one tool and returns its result model (``n2g_mcp.outputs``, which
rounds every number once); a request it cannot answer raises an :mod:`store.errors` error whose
message (worded in ``n2g_mcp.text``) says what to call next. Nothing here knows about MCP, so the
command line and scripts can use it as it is::

    queries = Queries(Path("stores"))
    queries.search(activating=[" except"], context=[" everyone"]).results
"""

from __future__ import annotations

from n2g_mcp.live_queries import LiveQueries
from n2g_mcp.output_queries import OutputQueries
from n2g_mcp.probe_queries import ProbeQueries
from n2g_mcp.scoring_queries import ScoringQueries
from n2g_mcp.store_queries import StoreQueries


class Queries(StoreQueries, LiveQueries, ProbeQueries, ScoringQueries, OutputQueries):
    """Every query the tools answer; see the module docstring and :class:`n2g_mcp.resolve.Resolver`
    for the arguments (stores directory, live backend, served models, cursor signer)."""
