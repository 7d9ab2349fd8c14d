#!/usr/bin/env bash
# Gemma 3 270M's shipped files (issue 16): its whole-model scan, stores/gemma3-270m.scan.npz, and
# a store, stores/gemma3-270m.jsonl.gz (format v2: examples as references into that scan), with
# every neuron of layer 0 and 64 seeded neurons of each of layers 1-17, built with the default
# method; then its fidelity report.
#
#   scripts/build_gemma_store.sh          # scan (where missing), build, ship, report; resumable
#   scripts/build_gemma_store.sh ship     # ship and report what is built so far
#
# The build appends to $N2G_GEMMA (default: under $N2G_CACHE, outside the work tree, so a later
# session on the same machine resumes it); neurons already there are skipped. The sampled layers
# come first, in one run (one pass gathers all their traces), so every layer holds graphs as
# early as possible; layer 0 whole after.
set -euo pipefail
cd "$(dirname "$0")/.."
n2g=".venv/bin/n2g"
model="gemma3-270m"
work="${N2G_GEMMA:-${N2G_CACHE:-$HOME/.cache/n2g-mcp}/gemma/$model.jsonl}"
scan="stores/$model.scan.npz"
shipped="stores/$model.jsonl.gz"
mkdir -p "$(dirname "$work")"
if [[ "${1:-}" != "ship" ]]; then
    [[ -f "$scan" ]] || time "$n2g" scan --model "$model"
    time "$n2g" build --model "$model" --layers 1-17 --sample 64 --store "$work" --scan-file "$scan"
    time "$n2g" build --model "$model" --layers 0 --store "$work" --scan-file "$scan"
fi
"$n2g" store compact --scan-file "$scan" "$work" "$shipped"
"$n2g" eval --store "$shipped"
