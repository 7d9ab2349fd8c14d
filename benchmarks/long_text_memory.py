"""Peak memory of reading a neuron along the longest text the server accepts (20,000 characters).

    python benchmarks/long_text_memory.py [--layer 29] [--neuron 0] [--limit-gb 12] [--device cpu]

Four cases, each in its own subprocess so that each peak is its own: two texts (``emoji``:
20,000 emoji, 60k tokens; ``corpus``: the first 20,000 characters of the embedded corpus, Python
code and quotations) read two ways: ``one pass`` (the whole text in one forward pass, as ``predict_activations(compare=true)`` ran
before) and ``windowed`` (``builder.forward.long_activations``, what the live model runs now).
The parent reads each child's peak resident memory (``ru_maxrss`` from ``os.wait4``); the child
also reports its peak after loading the model, so the table shows what the text itself cost.

Each child runs under an address-space limit (``--limit-gb``), so a case that would need more
memory than that fails with the size it asked for instead of exhausting a shared machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_TEXT_CHARS = 20_000
"""The server's limit on predict_activations' text (``MAX_TEXT_CHARS`` in n2g_mcp/queries.py)."""


def make_text(kind: str) -> str:
    """The longest allowed text of one kind."""
    if kind == "emoji":
        return "\N{GRINNING FACE}" * MAX_TEXT_CHARS
    parts, size = [], 0
    with gzip.open(ROOT / "data" / "corpus" / "default.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            parts.append(text)
            size += len(text)
            if size >= MAX_TEXT_CHARS:
                break
    return "\n\n".join(parts)[:MAX_TEXT_CHARS]


def child(args: argparse.Namespace) -> None:
    """Run one case and print its figures as one JSON line."""
    limit = int(args.limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from builder.forward import long_activations, neuron_activations
    from builder.models import load_model

    model = load_model(args.model, device=args.device)
    ids = model.encode(make_text(args.text))
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    result = {"tokens": len(ids), "loaded_bytes": loaded}
    try:
        if args.method == "one pass":
            neuron_activations(model, args.layer, [ids], [args.neuron], max_batch_tokens=10**9)
        else:
            long_activations(model, args.layer, ids, [args.neuron])
        result["error"] = None
    except (RuntimeError, MemoryError) as exc:  # torch reports a failed allocation as RuntimeError
        result["error"] = str(exc).splitlines()[0][:200]
    result["seconds"] = time.perf_counter() - started
    print(json.dumps(result), flush=True)


def run_case(args: argparse.Namespace, text: str, method: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--text", text, "--method", method,
           "--layer", str(args.layer), "--neuron", str(args.neuron), "--model", args.model,
           "--limit-gb", str(args.limit_gb)] + (["--device", args.device] if args.device else [])
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": f"exit status {proc.returncode}"}
    result["peak_bytes"] = usage.ru_maxrss * 1024  # Linux reports KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=29, help="deepest layer of SmolLM2 by default")
    parser.add_argument("--neuron", type=int, default=0)
    parser.add_argument("--limit-gb", type=float, default=12.0,
                        help="address-space limit of each case's process")
    parser.add_argument("--device")
    parser.add_argument("--texts", default="emoji,corpus")
    parser.add_argument("--methods", default="one pass,windowed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--text", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    gib = 2**30
    print(f"model {args.model}, layer {args.layer}, neuron {args.neuron}; "
          f"texts of {MAX_TEXT_CHARS:,} characters; each case limited to {args.limit_gb:g} GiB "
          "of address space\n")
    print("| text | tokens | method | peak RSS (GiB) | model loaded (GiB) | text's own (GiB) | seconds | result |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for text in args.texts.split(","):
        for method in args.methods.split(","):
            r = run_case(args, text, method)
            loaded = r.get("loaded_bytes", 0)
            outcome = "ok" if r.get("error") is None else f"failed: {r['error']}"
            tokens = f"{r['tokens']:,}" if "tokens" in r else "-"
            print(f"| {text} | {tokens} | {method} | {r['peak_bytes'] / gib:.2f} | "
                  f"{loaded / gib:.2f} | {(r['peak_bytes'] - loaded) / gib:.2f} | "
                  f"{r.get('seconds', float('nan')):.1f} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
