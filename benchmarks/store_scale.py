"""The server at 100k graphs: cold start, search and similarity latency, peak memory.

    python benchmarks/store_scale.py [--graphs 100000] [--queries 300] [--workdir DIR]
    python benchmarks/store_scale.py --first-call --stores DIR [--model smollm2-135m]

1. Synthesises a store of ``--graphs`` graphs from the shipped ``stores/smollm2-135m.jsonl.gz``
   (3,264 graphs), once, into ``$N2G_CACHE/bench/store-<N>/`` as plain JSON lines, the format a
   build writes. Copy k of the shipped graphs goes to layers ``30k..30k+29`` of a synthetic model
   (``synthetic-<N>``, more layers than any real one here) and has its tokens renamed by a seeded
   permutation of the shipped token vocabulary, so the copies are not one another's duplicates
   but keep the shipped graphs' sizes, token frequencies and structure.
2. Starts ``n2g-mcp`` (``python -m n2g_mcp``) as a stdio subprocess and times process start to the
   first tool call answered, first with no index (the first-ever open, which builds it) and then
   with the index in place.
3. Through that server's stdio MCP client, times ``search_graphs`` (one activating token; a token
   and a context token; ``repeated`` in one layer; a listing by F1), ``find_similar_neurons`` for
   one neuron and for all pairs (in the store and within one layer) and ``get_graph``, and reads
   the server's peak resident memory (``VmHWM``).
4. Times the same queries on the query library in this process, as CPU time.

Wall-clock figures depend on what else the machine runs; the server's CPU time (read from
``/proc``) and the library's thread CPU time do not, so both are printed.

Goals (issue 10): cold start < 3 s with the index in place, search p50 < 5 ms, similar < 100 ms,
peak RSS < 1 GB. Figures are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import orjson
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "stores" / "smollm2-135m.jsonl.gz"
LAYERS = 30


# --------------------------------------------------------------------- the synthetic store
def _rename(mapping: dict[str, str], tokens: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for token, value in tokens.items():
        out.setdefault(mapping.get(token, token), value)
    return out


def synthesise(target: Path, count: int, seed: int = 0, source: Path = SHIPPED) -> Path:
    """Write a store of ``count`` graphs (see the module docstring); reuse it when present.

    ``source`` is the store copied (the shipped one by default); a version-2 source (examples as
    scan references, ``n2g store compact --scan-file``) gives a version-2 store, its header's scan
    kept, so the lines have the size an atlas built against its scan file has.
    """
    model = f"synthetic-{count}"
    path = target / f"{model}.jsonl"
    if path.is_file():
        return path
    target.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rb") as f:
        header = orjson.loads(f.readline())
        shipped = [orjson.loads(line) for line in f if line.strip()]
    vocab = sorted({t for g in shipped for t in (*g["activating_tokens"], *g["context_tokens"])}
                   | {row[1] for g in shipped for row in g["trie"] if isinstance(row[1], str) and row[1]})
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        scan = {"scan": header["scan"]} if header.get("scan") else {}
        out.write(orjson.dumps({"format": "n2g-store", "version": header["version"], "model": model,
                                "created": "2026-01-01T00:00:00+00:00", **scan}) + b"\n")
        written, copy = 0, 0
        while written < count:
            shuffled = vocab[:]
            rng.shuffle(shuffled)
            mapping = dict(zip(vocab, shuffled)) if copy else {}
            for graph in shipped:
                if written == count:
                    break
                line = dict(graph, model=model, layer=graph["layer"] + LAYERS * copy,
                            activating_tokens=_rename(mapping, graph["activating_tokens"]),
                            context_tokens=_rename(mapping, graph["context_tokens"]),
                            trie=[[p, mapping.get(t, t) if isinstance(t, str) else t, w, e]
                                  for p, t, w, e in graph["trie"]],
                            hook=f"blocks.{graph['layer'] + LAYERS * copy}.mlp.hook_post")
                out.write(orjson.dumps(line) + b"\n")
                written += 1
            copy += 1
    tmp.rename(path)
    return path


# --------------------------------------------------------------------- measuring
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid() -> int:
    """The n2g-mcp process: the newest child of this one."""
    pids = [int(p) for children in Path(f"/proc/{os.getpid()}/task").glob("*/children")
            for p in children.read_text().split()]
    return max(pids)


def server_params(stores: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "n2g_mcp", "--stores", str(stores)],
                                 env=dict(os.environ))


async def timed_calls(client: Client, pid: int, calls: list[tuple[str, dict]]) -> tuple[list[float], float]:
    """Wall milliseconds per call, and the server's mean CPU milliseconds per call."""
    times, cpu = [], cpu_seconds(pid)
    for tool, args in calls:
        start = time.perf_counter()
        result = await client.call_tool(tool, args)
        times.append((time.perf_counter() - start) * 1000)
        if result.is_error:
            raise RuntimeError(f"{tool}({args}) failed: {result.content[0].text[:300]}")
    return times, (cpu_seconds(pid) - cpu) * 1000 / len(calls)


async def cold_start(stores: Path, model: str, answer: dict | None = None) -> tuple[float, float]:
    """Seconds from spawning the server to the first search answered: wall, and the server's CPU.
    ``answer`` receives the search's structured result (``partial``, ``searched``, ``total``)."""
    start = time.perf_counter()
    async with Client(server_params(stores)) as client:
        result = await client.call_tool("search_graphs", {"activating": [" the"], "model": model, "limit": 5})
        wall, cpu = time.perf_counter() - start, cpu_seconds(server_pid())
        if result.is_error:
            raise RuntimeError(result.content[0].text)
        if answer is not None:
            answer.update(result.structured_content or {})
    return wall, cpu


async def first_calls(stores: Path, model: str) -> dict[str, object]:
    """First calls of a server over a never-seen stores directory (no index), then over the same
    directory after ``n2g index`` (what ``make setup`` runs) made its index (issue 27).

    The never-seen server is asked, in order: ``search_graphs(layer=17, limit=1)`` (its total must
    be the layer's every graph, not partial), ``get_graph`` of the store's last graph, 40 token
    searches (the index's background work may still run: the similar pairs), all similar pairs,
    then the same searches again.
    """
    for leftover in stores.glob(".n2g-index.sqlite*"):
        leftover.unlink()
    searches = [s | {"model": model, "limit": 5} for s in queries(store_path(stores, model), 80)[0] if "activating" in s]
    last = last_graph(store_path(stores, model))
    start = time.perf_counter()
    async with Client(server_params(stores)) as client:
        first = (await client.call_tool("search_graphs", {"model": model, "layer": 17, "limit": 1})).structured_content
        wall, cpu = time.perf_counter() - start, cpu_seconds(server_pid())
        t = time.perf_counter()
        graph = await client.call_tool("get_graph", {"model": model, "layer": last[0], "neuron": last[1]})
        get_ms = (time.perf_counter() - t) * 1000
        during, _ = await timed_calls(client, server_pid(), [("search_graphs", s) for s in searches])
        t = time.perf_counter()
        await client.call_tool("find_similar_neurons", {"model": model, "threshold": 0.9})
        pairs_s, pairs_at = time.perf_counter() - t, time.perf_counter() - start
        after, _ = await timed_calls(client, server_pid(), [("search_graphs", s) for s in searches])
    t = time.perf_counter()
    made = subprocess.run([sys.executable, "-m", "n2g_mcp.cli", "index", "--stores", str(stores)],
                          capture_output=True, text=True, env=dict(os.environ))
    index_s = time.perf_counter() - t if made.returncode == 0 else "no n2g index here"
    print(made.stdout.strip() or made.stderr.strip(), file=sys.stderr)
    warm = [await cold_start(stores, model) for _ in range(3)]
    return {
        "never-seen store: process start to first search_graphs(layer=17) answered (wall / server CPU), s":
            (wall, cpu),
        "  that answer: total, partial": f"{first.get('total')}, {first.get('partial')}",
        f"  then get_graph of the last graph (L{last[0]}/N{last[1]}), ms":
            f"{get_ms:.0f} ({'error' if graph.is_error else 'answered'})",
        f"  then {len(searches)} token searches, wall p50 / p95, ms": (percentile(during, 0.5), percentile(during, 0.95)),
        "  then all similar pairs: the call, s / answered after process start, s": (pairs_s, pairs_at),
        "  then the same searches, indexed, wall p50 / p95, ms": (percentile(after, 0.5), percentile(after, 0.95)),
        "n2g index (what make setup runs) over the indexed folder, s": index_s,
        "with the index made: process start to first search answered (wall / server CPU), s, median of 3":
            (statistics.median(w for w, _ in warm), statistics.median(c for _, c in warm)),
        "load average while measuring": os.getloadavg()[0],
    }


def store_path(stores: Path, model: str) -> Path:
    """The model's store in a directory (plain or compressed)."""
    for name in (f"{model}.jsonl", f"{model}.jsonl.gz"):
        if (stores / name).is_file():
            return stores / name
    raise FileNotFoundError(f"no store of {model} in {stores}")


def last_graph(path: Path) -> tuple[int, int]:
    """The layer and neuron of a store's last line."""
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        line = b""
        for line in f:  # noqa: B007
            pass
    graph = orjson.loads(line)
    return graph["layer"], graph["neuron"]


def queries(path: Path, n: int, seed: int = 1) -> tuple[list[dict], list[tuple[int, int]]]:
    """Search arguments drawn from the store's own graphs, and neurons to compare."""
    rng = random.Random(seed)
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        f.readline()
        sample = [orjson.loads(line) for i, line in enumerate(f) if i % 97 == 0]
    searches, neurons = [], []
    for i in range(n):
        g = rng.choice(sample)
        act, ctx = list(g["activating_tokens"]), list(g["context_tokens"])
        kind = i % 4
        if kind == 0 and act:
            searches.append({"activating": [rng.choice(act)]})
        elif kind == 1 and act and ctx:
            searches.append({"activating": [rng.choice(act)], "context": [rng.choice(ctx)]})
        elif kind == 2:
            searches.append({"repeated": True, "layer": g["layer"]})
        else:
            searches.append({"min_f1": round(rng.random(), 2)})
        neurons.append((g["layer"], g["neuron"]))
    return searches, neurons


def library_cpu_ms(stores: Path, model: str, searches: list[dict], neurons: list[tuple[int, int]]) -> dict:
    """CPU milliseconds per query of the query library in this process (no MCP, no other load)."""
    from n2g_mcp.queries import Queries

    q = Queries(stores)
    q.search(model=model)  # open the index

    def cpu(calls) -> list[float]:  # noqa: ANN001
        out = []
        for call in calls:
            start = time.thread_time()
            call()
            out.append((time.thread_time() - start) * 1000)
        return out

    return {
        "search": cpu([lambda s=s: q.search(model=model, **s) for s in searches]),
        "one": cpu([lambda n=n: q.similar(model, *n) for n in neurons[:100]]),
        "pairs": cpu([lambda: q.similar(model)] * 10),
    }


async def measure(stores: Path, path: Path, model: str, n_queries: int) -> dict[str, object]:
    for leftover in stores.glob(".n2g-index.sqlite*"):
        leftover.unlink()
    first_wall, first_cpu = await cold_start(stores, model)
    warm = [await cold_start(stores, model) for _ in range(3)]
    searches, neurons = queries(path, n_queries)
    async with Client(server_params(stores)) as client:
        await client.call_tool("list_models", {})
        pid = server_pid()
        search_ms, search_cpu = await timed_calls(client, pid, [("search_graphs", s | {"model": model})
                                                                for s in searches])
        one_ms, one_cpu = await timed_calls(client, pid, [
            ("find_similar_neurons", {"layer": layer, "neuron": neuron, "model": model}) for layer, neuron in neurons[:100]])
        pairs_ms, pairs_cpu = await timed_calls(client, pid, [("find_similar_neurons", {"model": model})] * 10)
        layer_ms, layer_cpu = await timed_calls(client, pid, [("find_similar_neurons", {"model": model, "layer": layer})
                                                              for layer in range(0, 900, 90)])
        graph_ms, graph_cpu = await timed_calls(client, pid, [("get_graph", {"layer": layer, "neuron": neuron,
                                                                             "model": model})
                                                              for layer, neuron in neurons[:100]])
        rss = peak_rss_mb(pid)
    lib = library_cpu_ms(stores, model, searches, neurons)

    def p(values: list[float]) -> tuple[float, float]:
        return percentile(values, 0.5), percentile(values, 0.95)

    return {
        "graphs": sum(1 for _ in open(path, "rb")) - 1,
        "store MB": path.stat().st_size / 1e6,
        "index MB": sum(f.stat().st_size for f in stores.glob(".n2g-index.sqlite*")) / 1e6,
        "first-ever open, builds the index (wall / server CPU), s": (first_wall, first_cpu),
        "cold start with the index (wall / server CPU), s, median of 3":
            (statistics.median(w for w, _ in warm), statistics.median(c for _, c in warm)),
        "search_graphs over stdio: wall p50 / p95, server CPU mean, ms": (*p(search_ms), search_cpu),
        "search, query library CPU p50 / p95, ms": p(lib["search"]),
        "find_similar_neurons one neuron over stdio: wall p50 / p95, server CPU mean, ms": (*p(one_ms), one_cpu),
        "similar to one neuron, query library CPU p50 / p95, ms": p(lib["one"]),
        "find_similar_neurons all pairs over stdio: wall p50 / p95, server CPU mean, ms": (*p(pairs_ms), pairs_cpu),
        "all pairs, query library CPU p50 / p95, ms": p(lib["pairs"]),
        "find_similar_neurons pairs in one layer: wall p50, server CPU mean, ms": (percentile(layer_ms, 0.5), layer_cpu),
        "get_graph over stdio: wall p50 / p95, server CPU mean, ms": (*p(graph_ms), graph_cpu),
        "server peak RSS, MB": rss,
        "load average while measuring": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--workdir", type=Path, help="where the synthetic store is kept "
                        "(default $N2G_CACHE/bench/store-<N>)")
    parser.add_argument("--fresh", action="store_true", help="synthesise the store again")
    parser.add_argument("--source", type=Path, default=SHIPPED, help="the store the synthetic one copies "
                        "(default the shipped one; a version-2 store gives atlas-sized lines)")
    parser.add_argument("--first-call", action="store_true", help="measure only the cold starts")
    parser.add_argument("--stores", type=Path, help="with --first-call: measure this stores directory (a "
                        "copy of stores/, or a git clone's) instead of a synthetic store")
    parser.add_argument("--model", default="smollm2-135m", help="with --stores: the model searched")
    parser.add_argument("--gzip", action="store_true", help="serve the synthetic store compressed "
                        "(.jsonl.gz, as shipped in a clone)")
    args = parser.parse_args()

    from store.models import cache_dir

    if args.stores is not None:
        figures = anyio.run(first_calls, args.stores.resolve(), args.model)
        print("| measure | value |\n| --- | --- |")
        for name, value in figures.items():
            print(f"| {name} | {' / '.join(f'{v:.3g}' for v in value) if isinstance(value, tuple) else value} |")
        return
    stores = args.workdir or cache_dir() / "bench" / f"store-{args.graphs}"
    if args.fresh and stores.exists():
        shutil.rmtree(stores)
    start = time.perf_counter()
    path = synthesise(stores, args.graphs, source=args.source)
    if args.gzip:  # a directory of its own, holding the store compressed only
        packed = stores / "gz" / (path.name + ".gz")
        if not packed.is_file():
            packed.parent.mkdir(exist_ok=True)
            with open(path, "rb") as f, gzip.open(packed, "wb", compresslevel=6) as out:
                shutil.copyfileobj(f, out)
        stores = packed.parent
    print(f"synthetic store: {path} ({time.perf_counter() - start:.1f} s to make or find)", file=sys.stderr)
    model = f"synthetic-{args.graphs}"
    if args.first_call:
        figures = anyio.run(first_calls, stores, model)
    else:
        figures = anyio.run(measure, stores, path, model, args.queries)
    print("| measure | value |\n| --- | --- |")
    for name, value in figures.items():
        if isinstance(value, tuple):
            shown = " / ".join(f"{v:.1f}" for v in value)
        elif isinstance(value, float):
            shown = f"{value:.2f}" if value < 100 else f"{value:.0f}"
        else:
            shown = str(value)
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
