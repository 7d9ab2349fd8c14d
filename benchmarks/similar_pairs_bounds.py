"""All-pairs find_similar_neurons at low thresholds: time and peak memory on the shipped store.

    python benchmarks/similar_pairs_bounds.py [--stores stores] [--timeout 120] [--memory-gb 4]

Each case runs the query library's ``similar`` (what the tool calls) in a fresh Python process
over ``--stores`` (its index built beforehand, so opening it costs a stat per file), and reports
the wall and CPU seconds of the call, the process's resident memory once the stores are open, and
its peak resident memory (``ru_maxrss``, which ``os.wait4`` returns for that child alone), so a
case killed at ``--timeout`` or at ``--memory-gb`` of address space still reports how far it got. Cases: threshold 0 and 0.1 over
the whole default store (issue 27: 18.7 GB and over 120 s before the search was bounded),
threshold 0 within one layer that has no kept pair and with the largest limit, and threshold 0
over the second model's store.

The same script measures an older checkout: run it with that checkout first on ``PYTHONPATH``
and its own copy of the stores folder (an older index schema would rebuild a shared index).
Figures are printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "smollm2 threshold=0": {"model": "smollm2-135m", "threshold": 0.0},
    "smollm2 threshold=0.1": {"model": "smollm2-135m", "threshold": 0.1},
    "smollm2 threshold=0 layer=5": {"model": "smollm2-135m", "threshold": 0.0, "layer": 5},
    "smollm2 threshold=0 limit=100": {"model": "smollm2-135m", "threshold": 0.0, "limit": 100},
    "gemma3 threshold=0": {"model": "gemma3-270m", "threshold": 0.0},
}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(stores: Path, case: dict) -> None:
    """The child: open the stores, then time one all-pairs call; print JSON on stdout."""
    from n2g_mcp.queries import Queries

    q = Queries(stores)
    q.list_models()  # open the index (built beforehand)
    opened = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    out = q.similar(case["model"], case.get("layer"), None, threshold=case["threshold"],
                    limit=case.get("limit", 20))
    print(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
                      "opened_mb": opened, "results": len(out.results),
                      "partial": getattr(out, "partial", None), "warnings": out.warnings}))


def measure(stores: Path, case: dict, timeout: float, memory_gb: float) -> dict:
    """Run one case in a child process under a time and address-space limit."""
    limit = int(memory_gb * (1 << 30))

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    child = subprocess.Popen([sys.executable, __file__, "--stores", str(stores), "--one", json.dumps(case)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=cap)
    started, outcome = time.perf_counter(), None
    while True:
        # wait4, not Popen.poll: it returns the peak memory of this child alone.
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - started > timeout:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            outcome = f"killed after {timeout:g} s"
            break
        time.sleep(0.2)
    child.returncode = os.waitstatus_to_exitcode(status)
    out, err = child.communicate()
    peak = usage.ru_maxrss / 1024
    if outcome is not None:
        return {"outcome": outcome, "peak_mb": peak}
    if child.returncode != 0:
        reason = "out of memory" if "MemoryError" in err else f"exit {child.returncode}"
        return {"outcome": reason, "peak_mb": peak, "error": err.strip().splitlines()[-1:]}
    return {"outcome": "answered", "peak_mb": peak, **json.loads(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=Path, default=ROOT / "stores")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a case may run")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address space a case may take")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.stores, json.loads(args.one))
        return
    print("| case | outcome | wall s | CPU s | peak RSS once open MB | peak RSS MB | pairs | partial |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, case in CASES.items():
        if args.only and args.only not in name:
            continue
        r = measure(args.stores, case, args.timeout, args.memory_gb)
        fmt = lambda key: f"{r[key]:.2f}" if isinstance(r.get(key), float) else "-"  # noqa: E731
        print(f"| {name} | {r['outcome']} | {fmt('wall_s')} | {fmt('cpu_s')} | {fmt('opened_mb')} | "
              f"{r['peak_mb']:.0f} | {r.get('results', '-')} | {r.get('partial', '-')} |", flush=True)
        for warning in r.get("warnings", []):
            print(f"<!-- {name}: {warning} -->", file=sys.stderr)


if __name__ == "__main__":
    main()
