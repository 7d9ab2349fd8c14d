#!/usr/bin/env bash
# The embedded dictionary of SmolLM2-135M, mlp-3k (docs/dictionaries.md), end to end; every step
# resumes where it stopped and skips what is done:
#
#   scripts/build_dictionary.sh            # train, measure, scan, then build every latent's graph
#   scripts/build_dictionary.sh sample 32  # ... building a seeded sample of 32 latents a layer first
#   scripts/build_dictionary.sh calibrate  # the built graphs calibrated on ordinary text, as the neuron atlas is
#   scripts/build_dictionary.sh ship       # merge what is built into stores/smollm2-135m.mlp-3k.jsonl.gz, and
#                                          # what is calibrated into stores/smollm2-135m.mlp-3k.ordinary.jsonl.gz
#
# Training keeps its activations and checkpoints under $N2G_CACHE/dictionaries; the build appends
# to $N2G_ATLAS (default $N2G_CACHE/atlas/smollm2-135m.mlp-3k.jsonl, outside the work tree), and
# latents already there are skipped, so running it again goes on from there (on a fresh machine
# it begins from the shipped graphs). `calibrate` keeps the built graphs' fitted paths and
# calibrates them (`n2g build --ordinary --paths-from`, docs/fidelity.md), into its own file beside
# the atlas; the server reads the calibrated file after the fitted one, so its graphs win.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
n2g="$py -m n2g_mcp.cli"
name="mlp-3k"
folder="dictionaries/smollm2-135m/$name"
scan="stores/smollm2-135m.$name.scan.npz"
shipped="stores/smollm2-135m.$name.jsonl.gz"
atlas="${N2G_ATLAS:-${N2G_CACHE:-$HOME/.cache/n2g-mcp}/atlas/smollm2-135m.$name.jsonl}"
calibrated="${atlas%.jsonl}.ordinary.jsonl"
shipped_calibrated="${shipped%.jsonl.gz}.ordinary.jsonl.gz"
layers="7,15,19,25"
mkdir -p "$(dirname "$atlas")"
if [[ "${1:-}" == "ship" ]]; then
    sources=()
    [[ -f "$shipped" ]] && sources+=("$shipped")
    $n2g store compact --scan-file "$scan" "${sources[@]}" "$atlas" "$shipped"
    if [[ -f "$calibrated" ]]; then
        sources=()
        [[ -f "$shipped_calibrated" ]] && sources+=("$shipped_calibrated")
        $n2g store compact --scan-file "$scan" "${sources[@]}" "$calibrated" "$shipped_calibrated"
    fi
    exit 0
fi
for layer in ${layers//,/ }; do
    [[ -f "$folder/layers.$layer.mlp/sae.safetensors" ]] || { $n2g -v dictionary train --out "$folder"; break; }
done
[[ -f "$folder/quality.json" ]] || $n2g dictionary quality "$folder" --max-tokens 8192
[[ -f "$scan" ]] || $n2g -v dictionary scan "$folder"
if [[ ! -e "$atlas" && -f "$shipped" ]]; then
    # A fresh machine: begin from the committed graphs, so the build goes on from them.
    gzip -dc "$shipped" > "$atlas.part" && mv "$atlas.part" "$atlas"
fi
build() { $n2g build --dictionary "$name=$folder" --layers "$layers" --scan-file "$scan" "$@"; }
if [[ "${1:-}" == "calibrate" ]]; then
    # The scan beside the atlas, so the stored examples (references into it) read.
    ln -sf "$PWD/$scan" "$(dirname "$atlas")/$(basename "$scan")"
    if [[ ! -e "$calibrated" && -f "$shipped_calibrated" ]]; then
        gzip -dc "$shipped_calibrated" > "$calibrated.part" && mv "$calibrated.part" "$calibrated"
    fi
    # Without the short-text protocol, as the neuron atlas (the fitted graphs keep those figures).
    build --ordinary --paths-from "$atlas" --no-short-texts --store "$calibrated"
    exit 0
fi
if [[ "${1:-}" == "sample" ]]; then
    build --sample "${2:-32}" --store "$atlas"
fi
build --store "$atlas"
