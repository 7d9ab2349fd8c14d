"""Every tool of the server on one model, from outside, over MCP (issue 16, item 3).

    python benchmarks/model_tools_check.py [--model gemma3-270m] [--stores DIR]

Starts ``python -m n2g_mcp`` as a stdio subprocess and talks to it only through the MCP SDK's
client, as an agent would, passing ``model=`` to every call: list_models (the model's shape and
graph count), search_graphs, get_graph, top_activations (a neuron with a graph and one without),
find_similar_neurons, render_graph_dot, predict_activations (with compare), build_graph (a live
build of a neuron the store lacks), find_neurons, find_induction_neurons, ablate_neurons (the
probe's best 20, against its random control), test_hypothesis and steer_neurons. ``--also
MODEL`` first loads a second model in the same server (a find_neurons call), so
the server's memory is measured with both. Prints one line a call (seconds, error or not, the
summary's first line), then one JSON line with the figures (the server's resident memory, now and
at its peak, read from /proc on Linux); exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

TEXT = "from collections import OrderedDict\nimport numpy as np\n\nThe old lighthouse keeper climbed the stairs."
REPEATED = "lamp violin desert cobalt ferry mango quartz tulip. lamp violin desert cobalt ferry mango"


def server_memory() -> dict[str, float]:
    """The stdio server's resident memory in MB (``VmRSS``, and its peak ``VmHWM``): the child
    process of this one that runs ``n2g_mcp``; empty where /proc cannot tell."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == os.getpid() and b"n2g_mcp" in cmdline:
            return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}
    return {}


async def check(model: str, stores: Path | None, also: str | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "n2g_mcp"] + (["--stores", str(stores)] if stores else [])
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    figures: dict[str, Any] = {"model": model, "calls": {}}
    async with Client(params) as client:
        async def call(tool: str, on: str | None = None, **args: Any) -> dict[str, Any]:
            """One tool call on ``model`` (or on ``on``), printed and timed; its structured content."""
            target = on or model
            started = time.monotonic()
            result = await client.call_tool(tool, {"model": target, **args} if tool != "list_models" else args)
            seconds = time.monotonic() - started
            text = "\n".join(getattr(b, "text", "") for b in result.content)
            shown = ", ".join(f"{k}={v!r}" for k, v in args.items() if k not in ("neurons", "text", "prompt"))
            label = tool if on is None else f"{tool} on {on}"
            print(f"{'ERROR' if result.is_error else 'ok'} {label}({shown}) {seconds:.1f} s: "
                  f"{text.splitlines()[0] if text else ''}", flush=True)
            figures["calls"][label] = {"seconds": round(seconds, 2), "error": bool(result.is_error)}
            if result.is_error:
                figures.setdefault("errors", []).append(f"{label}: {text}")
                return {}
            return result.structured_content or {}

        if also:  # find_neurons runs the model, and needs no graph
            await call("find_neurons", on=also, text=TEXT, limit=1)
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
        last, cursor = layers - 1, None
        held: set[int] = set()
        while True:  # every graph of the last layer, page by page
            page = (await client.call_tool("search_graphs", {"model": model, "layer": last, "limit": 100,
                                                             **({"cursor": cursor} if cursor else {})}))
            content = page.structured_content or {}
            held |= {h["neuron"] for h in content.get("results", [])}
            cursor = content.get("next_cursor")
            if not cursor:
                break
        # A neuron the store lacks, for the live build (neuron 0 rebuilt where the layer is whole).
        missing = next((n for n in range(info["d_mlp"]) if n not in held), None)
        await call("top_activations", layer=last, neuron=missing or 0, limit=3)
        await call("find_similar_neurons", layer=layer, neuron=neuron, threshold=0.5)
        await call("render_graph_dot", layer=layer, neuron=neuron, max_nodes=40)
        predicted = await call("predict_activations", layer=layer, neuron=neuron, text=TEXT, compare=True)
        figures["predict_agreement"] = predicted.get("agreement")
        built = await call("build_graph", layer=last, neuron=missing or 0, rebuild=missing is None)
        figures["built"] = {"id": built.get("id"), "built": built.get("built"),
                            "f1": (built.get("fidelity") or {}).get("f1")}
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
        figures["server_memory_mb"] = server_memory() | ({"models_loaded": [also, model]} if also else {})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--stores", type=Path, default=None,
                        help="the server's stores (default: links to the shipped files in a temporary folder, "
                        "so that the live build does not add to stores/)")
    parser.add_argument("--also", default=None, help="a second model to load in the same server first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        stores = args.stores
        if stores is None:
            stores = Path(scratch)
            for shipped in (Path(__file__).resolve().parents[1] / "stores").iterdir():
                if shipped.suffix in (".gz", ".npz"):  # stores and scans as shipped, no local builds
                    (stores / shipped.name).symlink_to(shipped)
        figures = anyio.run(check, args.model, stores, args.also)
    print(json.dumps(figures))
    if figures.get("errors"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
