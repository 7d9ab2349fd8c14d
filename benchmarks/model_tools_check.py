"""Every tool of the server on one model, from outside, over MCP (issue 16, item 3).

    python benchmarks/model_tools_check.py [--model gemma3-270m] [--stores DIR]

Starts ``python -m n2g_mcp`` as a stdio subprocess and talks to it only through the MCP SDK's
client, as an agent would, passing ``model=`` to every call: list_models (the model's shape and
graph count), search_graphs, get_graph, top_activations (a neuron with a graph and one without),
find_similar_neurons, render_graph_dot, predict_activations (with compare), build_graph (a live
build of a neuron the store lacks), find_neurons, find_induction_neurons, ablate_neurons (the
probe's best 20, against its random control), test_hypothesis and steer_neurons. Prints one
line a call (seconds, error or not, the summary's first line), then one JSON line with the
figures; exits 1 if any call failed.
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

TEXT = "from collections import OrderedDict\nimport numpy as np\n\nThe old lighthouse keeper climbed the stairs."
REPEATED = "lamp violin desert cobalt ferry mango quartz tulip. lamp violin desert cobalt ferry mango"


async def check(model: str, stores: Path | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "n2g_mcp"] + (["--stores", str(stores)] if stores else [])
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    figures: dict[str, Any] = {"model": model, "calls": {}}
    async with Client(params) as client:
        async def call(tool: str, **args: Any) -> dict[str, Any]:
            started = time.monotonic()
            result = await client.call_tool(tool, {"model": model, **args} if tool != "list_models" else args)
            seconds = time.monotonic() - started
            text = "\n".join(getattr(b, "text", "") for b in result.content)
            shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in ("neurons", "text", "prompt"))
            print(f"{'ERROR' if result.is_error else 'ok'} {tool}({shown}) {seconds:.1f} s: "
                  f"{text.splitlines()[0] if text else ''}", flush=True)
            figures["calls"][tool] = {"seconds": round(seconds, 2), "error": bool(result.is_error)}
            if result.is_error:
                figures.setdefault("errors", []).append(f"{tool}: {text}")
                return {}
            return result.structured_content or {}

        listing = await call("list_models")
        info = next((m for m in listing.get("models", []) if m["model"] == model), None)
        if info is None:
            raise SystemExit(f"{model} is not served")
        figures["shape"] = {k: info.get(k) for k in ("n_layers", "d_mlp", "graphs", "partial")}
        listed = await call("search_graphs", limit=100)
        hits = listed.get("results", [])
        per_layer: dict[int, int] = {}
        layers = info.get("n_layers") or 0
        for layer in range(layers):
            while True:  # a fresh index answers partially at first: count once it is complete
                page = (await client.call_tool("search_graphs", {"model": model, "layer": layer, "limit": 1}))
                content = page.structured_content or {}
                if not content.get("partial"):
                    break
                await anyio.sleep(1.0)
            per_layer[layer] = content.get("total", 0)
        figures["graphs_per_layer"] = per_layer
        best = max(hits, key=lambda h: h.get("f1") or 0.0)
        layer, neuron = best["layer"], best["neuron"]
        graph = await call("get_graph", layer=layer, neuron=neuron)
        token = next(iter(graph.get("activating_tokens") or {" the": 1.0}))
        await call("search_graphs", activating=[token], limit=5)
        await call("top_activations", layer=layer, neuron=neuron, limit=3)
        missing = next(n for n in range(info["d_mlp"]) if layers and per_layer.get(layers - 1, 0) < info["d_mlp"]
                       and n not in {h["neuron"] for h in hits if h["layer"] == layers - 1})
        await call("top_activations", layer=layers - 1, neuron=missing, limit=3)
        await call("find_similar_neurons", layer=layer, neuron=neuron, threshold=0.5)
        await call("render_graph_dot", layer=layer, neuron=neuron, max_nodes=40)
        predicted = await call("predict_activations", layer=layer, neuron=neuron, text=TEXT, compare=True)
        figures["predict_agreement"] = predicted.get("agreement")
        built = await call("build_graph", layer=layers - 1, neuron=missing)
        figures["built"] = {k: built.get(k) for k in ("id", "f1", "built")}
        await call("find_neurons", text=TEXT, limit=5)
        probe = await call("find_induction_neurons", limit=20)
        ids = [r["id"] for r in probe.get("results", [])]
        figures["induction"] = {k: probe.get(k) for k in ("loss_first_copy", "loss_second_copy", "seconds")}
        figures["induction"]["top5"] = ids[:5]
        if ids:
            ablation = await call("ablate_neurons", neurons=ids, seed=10)
            figures["ablation"] = {k: ablation.get(k) for k in ("delta", "control_delta", "loss_clean")}
            steered = await call("steer_neurons", neurons=ids[:5], prompt=REPEATED, scale=2.0, max_new_tokens=8)
            figures["steer"] = {k: steered.get(k) for k in ("clean_text", "steered_text")}
        claim = await call("test_hypothesis", layer=layer, neuron=neuron, pattern=token, kind="tokens")
        figures["hypothesis_f1"] = (claim.get("overall") or {}).get("f1")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--stores", type=Path, default=None, help="the server's stores (default: its own)")
    args = parser.parse_args()
    figures = anyio.run(check, args.model, args.stores)
    print(json.dumps(figures))
    if figures.get("errors"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
