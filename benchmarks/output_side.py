"""What neurons write, on the shipped models: find_by_output, and output_effects beside the weights.

    python benchmarks/output_side.py --model smollm2-135m --neurons L29/N100,L26/N1307,L10/N7
    python benchmarks/output_side.py --model gemma3-270m --neurons L17/N0,L6/N387 --token " import"

Over the shipped ``stores/`` (the model's scan and output-token files), through the query library
the tools call: the neurons whose output direction promotes ``--token`` (how many, the first five
and how long the search took), then, for each neuron, one markdown table row: the tokens its
weights say it promotes, and for the zeroed and the raised edit the direct-path correlation and
overlap, the token whose probability moved most, and the seconds the call took (the first one
loads the model). docs/output.md's table is this script's output.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from n2g_mcp.queries import Queries
from store.effects import EditEffect
from store.names import parse_neuron_id

STORES = Path(__file__).resolve().parents[1] / "stores"


def _moved(edit: EditEffect) -> str:
    """The token whose probability the edit moved most (the listed tokens are ranked by it)."""
    best = max(edit.rose[:1] + edit.fell[:1], key=lambda s: abs(s.prob_edited - s.prob_clean))
    return f"{best.token!r} {best.prob_clean:.4f} -> {best.prob_edited:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--neurons", default="L29/N100,L26/N1307,L10/N7", help="neuron ids, comma-separated")
    parser.add_argument("--token", default=" import", help="the token find_by_output looks for")
    parser.add_argument("--windows", type=int, default=8)
    args = parser.parse_args()
    queries = Queries(STORES)
    started = time.perf_counter()
    found = queries.find_by_output([args.token], model=args.model, limit=5)
    print(f"find_by_output({args.token!r}): {found.total} neurons in {time.perf_counter() - started:.2f} s "
          f"(first call: reads the file, sorts its ids)")
    for hit in found.results:
        print(f"  {hit.id}: {hit.matched} at rank {hit.ranks}, at_max {hit.at_max}, promotes {hit.promoted}")
    print("\n| neuron | promotes (weights) | zeroed: correlation, overlap, moved most | raised: correlation, "
          "overlap, moved most | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for item in args.neurons.split(","):
        layer, neuron = parse_neuron_id(item)
        started = time.perf_counter()
        out = queries.output_effects(args.model, layer, neuron, windows=args.windows)
        seconds = time.perf_counter() - started
        tokens = ", ".join(repr(t.token) for t in out.static.promoted[:4])
        cells = [f"{e.direct_correlation}, {e.direct_overlap}, {_moved(e)}" for e in (out.zeroed, out.raised)]
        print(f"| {out.id} | {tokens} | {cells[0]} | {cells[1]} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
