"""Does the induction probe's top list matter for copying? Measured from outside, over MCP.

    python benchmarks/induction_check.py [--top 20] [--each] [--stores DIR]

Starts ``python -m n2g_mcp`` as a stdio subprocess and talks to it only through the MCP SDK's
client, as an agent would:

1. ``find_induction_neurons`` with its defaults (every layer; 16 x 40 random token ids per seed,
   seeds 0-2): the copy losses and the top ``--top`` neurons by Cohen's d.
2. ``ablate_neurons`` on those neurons, with its random control of the same layers, on the probe's
   first seed (sequences the ranking saw) and on seeds 10 and 11 (fresh sequences, fresh controls);
   with ``--each``, each neuron's own delta on seed 10 (one more pass a neuron).
3. ``steer_neurons``: the neurons silenced (scale 0) on a prompt that repeats itself, called twice
   (the same answer both times), then the five strongest held at 2 x their corpus max.

Prints each step's summary and, at the end, one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

PROMPT = "lamp violin desert cobalt ferry mango quartz tulip. lamp violin desert"


async def check(stores: Path | None, top: int, each: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "n2g_mcp"] + (["--stores", str(stores)] if stores else [])
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    figures: dict[str, Any] = {}
    async with Client(params) as client:
        async def call(tool: str, **args: Any) -> dict[str, Any]:
            started = time.monotonic()
            result = await client.call_tool(tool, args)
            text = "\n".join(getattr(b, "text", "") for b in result.content)
            print(f"-> {tool}({', '.join(f'{k}={v!r}' for k, v in args.items() if k != 'neurons')}) "
                  f"{time.monotonic() - started:.0f} s\n{text}\n", flush=True)
            if result.is_error:
                raise SystemExit(f"{tool} failed")
            return result.structured_content

        probe = await call("find_induction_neurons", limit=top)
        ids = [r["id"] for r in probe["results"]]
        figures["probe"] = {"loss_first_copy": probe["loss_first_copy"], "loss_second_copy": probe["loss_second_copy"],
                            "seconds": probe["seconds"], "top": ids,
                            "layers": sorted({r["layer"] for r in probe["results"]})}
        for seed in (0, 10, 11):
            a = await call("ablate_neurons", neurons=ids, seed=seed, each=each and seed == 10)
            figures[f"ablate_seed{seed}"] = {k: a[k] for k in ("loss_first_copy", "loss_clean", "delta",
                                                                 "control_delta", "each")}
        silenced = await call("steer_neurons", neurons=ids, prompt=PROMPT, scale=0.0, max_new_tokens=12)
        again = await call("steer_neurons", neurons=ids, prompt=PROMPT, scale=0.0, max_new_tokens=12)
        strongest = [e["id"] for e in figures["ablate_seed10"]["each"][:5]] or ids[:5]
        boosted = await call("steer_neurons", neurons=strongest, prompt=PROMPT, scale=2.0, max_new_tokens=12)
        figures["steer"] = {"clean": silenced["clean_text"], "silenced": silenced["steered_text"],
                            "repeats_exactly": again == silenced, "boosted_neurons": strongest,
                            "boosted": boosted["steered_text"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=20, help="how many of the probe's best to ablate (default 20)")
    parser.add_argument("--each", action="store_true", help="also each neuron's own delta (seed 10)")
    parser.add_argument("--stores", type=Path, default=None, help="stores directory (default: the server's)")
    args = parser.parse_args()
    started = time.monotonic()
    figures = anyio.run(check, args.stores, args.top, args.each)
    figures["wall_s"] = round(time.monotonic() - started)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
