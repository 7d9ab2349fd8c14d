"""First-call latency of each tool over a never-seen copy of a store (issue 27).

    python benchmarks/first_second.py [--store stores/smollm2-135m.jsonl.gz] [--no-sidecar]
                                      [--code DIR] [--workdir DIR]

Copies the store (with its scan and output-token files, and its sidecar index unless
``--no-sidecar``) into a folder the server has never indexed, then, for each tool in turn, starts
``n2g-mcp`` over stdio on that folder with no index (the index file is deleted before each start)
and times its first call: from process start to the answer, and the call alone (the server's
start, imports and MCP handshake excluded). Each answer is checked against what the store holds
(the layer's graph count, the last graph found, every stored hit reported with its graph), so a
fast but partial answer shows as wrong. ``--code DIR`` serves that checkout's code (an older
commit's, for the figures before a change). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio
import orjson
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
SIDECAR_SUFFIX = ".n2gidx"  # store.sidecar.SIDECAR_SUFFIX (not imported: --code may serve older code)


def store_facts(path: Path) -> dict:
    """What the answers are checked against: per layer the graph count, the last line's neuron."""
    per_layer: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    last = (0, 0)
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        header = orjson.loads(f.readline())
        for line in f:
            if line.strip():
                g = orjson.loads(line)
                last = (g["layer"], g["neuron"])
                if last not in seen:
                    seen.add(last)
                    per_layer[last[0]] = per_layer.get(last[0], 0) + 1
    return {"model": header["model"], "per_layer": per_layer, "last": last, "count": len(seen), "seen": seen}


def calls(facts: dict) -> list[tuple[str, dict, object]]:
    """(tool, arguments, check of the structured answer: None where it is right, else why not)."""
    model, (layer, neuron) = facts["model"], facts["last"]
    mid = sorted(facts["per_layer"])[len(facts["per_layer"]) // 2]

    def total(s: dict) -> str | None:
        want = facts["per_layer"][mid]
        return None if s.get("total") == want and not s.get("partial") else f"total {s.get('total')} of {want}"

    def listed(s: dict) -> str | None:
        got = {m["model"]: m.get("graphs") for m in s.get("models", [])}
        return None if got.get(model) == facts["count"] else f"graphs {got.get(model)} of {facts['count']}"

    def has_graph(s: dict) -> str | None:
        hits = s.get("results") or []
        wrong = [h for h in hits if h.get("has_graph") != ((h["layer"], h["neuron"]) in facts["seen"])]
        return None if hits and not wrong else f"{len(wrong)} of {len(hits)} has_graph wrong"

    def answered(s: dict) -> str | None:
        return None if not s.get("partial") else "partial"

    return [
        ("list_models", {}, listed),
        ("search_graphs", {"model": model, "layer": mid, "limit": 1}, total),
        ("search_graphs", {"model": model, "activating": [" import"], "limit": 5}, answered),
        ("get_graph", {"model": model, "layer": layer, "neuron": neuron}, answered),
        ("top_activations", {"model": model, "layer": layer, "neuron": neuron, "limit": 3}, answered),
        ("predict_activations", {"model": model, "layer": layer, "neuron": neuron, "compare": False,
                                 "text": "from collections import defaultdict"}, answered),
        ("find_similar_neurons", {"model": model, "layer": layer, "neuron": neuron}, answered),
        ("find_similar_neurons", {"model": model, "threshold": 0.9}, answered),
        ("find_neurons", {"model": model, "text": "from collections import defaultdict", "layers": [0, 1]},
         has_graph),
    ]


def server(stores: Path, code: Path | None) -> StdioServerParameters:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return StdioServerParameters(command=sys.executable, args=["-m", "n2g_mcp", "--stores", str(stores)], env=env)


async def first_call(stores: Path, code: Path | None, tool: str, args: dict) -> tuple[float, float, dict, str | None]:
    """Process start to answer, and the call alone, in seconds; the structured answer; an error."""
    for leftover in stores.glob(".n2g-index.sqlite*"):
        leftover.unlink()
    start = time.perf_counter()
    async with Client(server(stores, code)) as client:
        t = time.perf_counter()
        result = await client.call_tool(tool, args)
        done = time.perf_counter()
    error = result.content[0].text[:160] if result.is_error else None
    return done - start, done - t, result.structured_content or {}, error


async def measure(stores: Path, code: Path | None, facts: dict) -> list[tuple[str, float, float, str]]:
    rows = []
    for tool, args, check in calls(facts):
        total, alone, answer, error = await first_call(stores, code, tool, args)
        verdict = f"error: {error}" if error else (check(answer) or "complete")
        shown = ", ".join(f"{k}={v}" for k, v in args.items() if k not in ("model", "text"))
        rows.append((f"{tool}({shown})", total, alone, verdict))
        print(f"{rows[-1][0]}: {alone:.2f} s ({verdict})", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=ROOT / "stores" / "smollm2-135m.jsonl.gz")
    parser.add_argument("--no-sidecar", action="store_true", help="copy the store without its sidecar index")
    parser.add_argument("--code", type=Path, help="serve this checkout's code (default: this one's)")
    parser.add_argument("--workdir", type=Path, help="where the never-seen copy is made (default: a temporary folder)")
    args = parser.parse_args()
    store = args.store.resolve()
    work = Path(tempfile.mkdtemp(prefix="n2g-first-", dir=args.workdir))
    try:
        stem = store.name.split(".jsonl")[0]
        for path in store.parent.glob(f"{stem}.*"):
            if path.name.endswith(SIDECAR_SUFFIX) and args.no_sidecar:
                continue
            shutil.copy(path, work / path.name)  # a new file: new modification times, never indexed
        copied = sorted(p.name for p in work.iterdir())
        print(f"copied {copied} to {work}", file=sys.stderr)
        facts = store_facts(store)
        rows = anyio.run(measure, work, args.code, facts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"never-seen copy of {store.name} ({facts['count']:,} graphs), "
          f"{'with' if any(n.endswith(SIDECAR_SUFFIX) for n in copied) else 'without'} its sidecar, "
          f"code {args.code or ROOT}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| first call | process start to answer, s | the call alone, s | answer |\n| --- | --- | --- | --- |")
    for name, total, alone, verdict in rows:
        print(f"| `{name}` | {total:.2f} | {alone:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
