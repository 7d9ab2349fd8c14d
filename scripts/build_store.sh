#!/usr/bin/env bash
# Rebuilds the prebuilt store stores/smollm2-135m.jsonl.gz and prints its fidelity report:
#   every neuron of layers 0 and 1, and 128 seeded-sampled neurons of each of layers 2-29, all
#   from the whole embedded corpus (top 50 windows a neuron: the paper's top 20 split 10 train /
#   10 test, ranks 21-50 extra train windows). Resumable: run it again after an interruption.
# Layers 9-29 were built while folded (case- and space-insensitive) matching was the default;
# `--normalized` reproduces them as shipped. Drop it to build them with today's exact matching.
set -euo pipefail
cd "$(dirname "$0")/.."
n2g=".venv/bin/n2g"
work="stores/smollm2-135m.jsonl"
time "$n2g" build --layers 0-1 --store "$work"
time "$n2g" build --layers 2-8 --sample 128 --store "$work"
time "$n2g" build --layers 9-29 --sample 128 --normalized --store "$work"
"$n2g" store compact "$work" stores/smollm2-135m.jsonl.gz
"$n2g" eval --store stores/smollm2-135m.jsonl.gz --paper
