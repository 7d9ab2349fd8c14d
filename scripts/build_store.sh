#!/usr/bin/env bash
# Rebuilds the prebuilt store stores/smollm2-135m.jsonl.gz, the atlas: every neuron of
# SmolLM2-135M (30 layers x 1,536) from the whole embedded corpus (top 50 windows a neuron: the
# paper's top 20 split 10 train / 10 test, ranks 21-50 extra train windows), with the default
# method, and prints its fidelity report. Resumable: run it again after an interruption (see
# scripts/build_atlas.sh; about 12 h on a 2-core CPU). The sampled store before the atlas (128
# seeded neurons a layer from layer 2 on) is this script as of commit 027a353.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build_atlas.sh 0-29
scripts/build_atlas.sh ship
