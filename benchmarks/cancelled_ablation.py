"""How long the next call waits after a client cancels ablate_neurons, with the real model.

    python benchmarks/cancelled_ablation.py [--stores stores] [--after 3] [--neurons 32]

Serves ``--stores`` with the real live model (the embedded default, SmolLM2-135M) in this
process and drives it through the MCP SDK's in-memory client:

1. loads the model (``find_neurons`` on a short text, timed apart, then three more to warm up);
2. starts ``ablate_neurons`` on ``--neurons`` neurons of layer 15 with ``each=true`` (one forward
   pass of the induction probe's 16 x 81 tokens per neuron, plus three), and cancels it from the
   client after ``--after`` seconds;
3. at once calls ``ablate_neurons`` with a one-token text (an argument error), then
   ``find_neurons`` (which needs the model), and times each from the cancel, and when the
   cancelled ablation let go of the model; then times ``find_neurons`` again alone, for what it
   costs without waiting.

Before issue 27 the cancelled ablation kept running and holding the model, so both later calls
waited for all of its passes (22.5 s for an argument error in the fuzz that found it). Run with
an older checkout first on ``PYTHONPATH`` to measure it. Wall-clock figures: they depend on what
else the machine runs; the figures printed are a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio
from mcp import Client

ROOT = Path(__file__).resolve().parents[1]


async def measure(stores: Path, after: float, n_neurons: int) -> dict[str, float | str]:
    from builder.run.live import LiveModels
    from n2g_mcp.live import BuilderBackend
    from n2g_mcp.server import create_server

    models, left = LiveModels(), []
    ablate = models.ablate

    def timed_ablate(*args, **kwargs):  # when the ablation lets go of the model, done or cancelled
        try:
            return ablate(*args, **kwargs)
        finally:
            left.append(time.perf_counter())

    models.ablate = timed_ablate
    server = create_server(stores, live=BuilderBackend(models=models))
    neurons = [f"L15/N{n}" for n in range(n_neurons)]
    figures: dict[str, float | str] = {}
    async with Client(server) as client:
        started = time.perf_counter()
        loaded = await client.call_tool("find_neurons", {"text": "The cat sat on the", "layers": [15]})
        assert not loaded.is_error, loaded.content[0].text
        figures["model load + first find_neurons s"] = time.perf_counter() - started
        for _ in range(3):  # the first passes after loading are slower (allocations, thread pools)
            await client.call_tool("find_neurons", {"text": "The cat sat on the", "layers": [15]})

        started = time.perf_counter()
        with anyio.move_on_after(after):
            await client.call_tool("ablate_neurons", {"neurons": neurons, "each": True})
            figures["note"] = "the ablation finished before the cancel: raise --neurons"
        cancelled_at = time.perf_counter()
        figures["ablation ran before its cancel s"] = cancelled_at - started

        refused = await client.call_tool("ablate_neurons", {"neurons": neurons[:1], "text": "hi"})
        figures["argument error, from the cancel s"] = time.perf_counter() - cancelled_at
        figures["argument error says"] = refused.content[0].text[:60]
        found = await client.call_tool("find_neurons", {"text": "The cat sat on the", "layers": [15]})
        assert not found.is_error, found.content[0].text
        figures["find_neurons (needs the model), from the cancel s"] = time.perf_counter() - cancelled_at
        figures["model freed, from the cancel s"] = left[0] - cancelled_at
        started = time.perf_counter()
        await client.call_tool("find_neurons", {"text": "The cat sat on the", "layers": [15]})
        figures["find_neurons again, alone s"] = time.perf_counter() - started
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=Path, default=ROOT / "stores")
    parser.add_argument("--after", type=float, default=3.0, help="seconds before the client cancels")
    parser.add_argument("--neurons", type=int, default=32, help="neurons ablated, each alone too")
    args = parser.parse_args()
    figures = anyio.run(measure, args.stores, args.after, args.neurons)
    print("| measure | value |\n| --- | --- |")
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} |" if isinstance(value, float) else f"| {name} | {value} |")


if __name__ == "__main__":
    main()
