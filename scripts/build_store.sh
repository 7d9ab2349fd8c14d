#!/usr/bin/env bash
# Rebuilds the prebuilt store stores/smollm2-135m.jsonl.gz and prints its fidelity report.
#   every neuron of layers 0 and 1 (full corpus scan), plus 32 seeded-sampled neurons of six
#   deeper layers (first 200k corpus tokens scanned: a full forward runs ~570 tokens/s on 2 CPU
#   cores). Resumable: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
n2g=".venv/bin/n2g"
work="stores/smollm2-135m.jsonl"
time "$n2g" build --layers 0-1 --store "$work"
time "$n2g" build --layers 5,10,15,20,25,29 --sample 32 --max-tokens 200000 --store "$work"
"$n2g" store compact "$work" stores/smollm2-135m.jsonl.gz
"$n2g" eval --store stores/smollm2-135m.jsonl.gz --paper
