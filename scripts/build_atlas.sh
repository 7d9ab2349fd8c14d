#!/usr/bin/env bash
# The atlas: every neuron of SmolLM2-135M (30 layers x 1,536) as a graph, built with the
# default method, then shipped in stores/smollm2-135m.jsonl.gz (format v2: examples as
# references into stores/smollm2-135m.scan.npz).
#
#   scripts/build_atlas.sh 0-3        # build these layers (default: all 30), resumable
#   scripts/build_atlas.sh ship       # merge what is built into the shipped store, and report
#   scripts/build_atlas.sh ordinary 0-16  # the shipped graphs calibrated on ordinary text (issue 28)
#   scripts/build_atlas.sh ship-ordinary  # ... shipped as stores/smollm2-135m.ordinary-L<a>-<b>.jsonl.gz
#   scripts/build_atlas.sh induction 50   # the induction probe's best 50, rebuilt (so they carry
#                                         # repeat paths before their layers are built), shipped
#
# N2G_MODEL names another model with a shipped store and scan (default smollm2-135m), e.g.
#   N2G_MODEL=gemma3-270m scripts/build_atlas.sh ordinary 0-17   # Gemma's shipped graphs, calibrated
#   N2G_MODEL=gemma3-270m scripts/build_atlas.sh ship-ordinary
#
# The build appends to $N2G_ATLAS (default: under $N2G_CACHE, outside the work tree, so a later
# session on the same machine resumes it); neurons already there are skipped. Where there is no
# atlas yet, it begins with the shipped graphs built with today's method. One invocation
# gathers the traces of all its layers in one pass over the scan file's windows, to its deepest
# layer: ask for every layer left at once rather than one layer a run. `ship` merges the built
# graphs over the shipped ones (the atlas wins where both hold a neuron), so every layer that is
# finished can be committed while the rest builds.
set -euo pipefail
cd "$(dirname "$0")/.."
n2g=".venv/bin/n2g"
model="${N2G_MODEL:-smollm2-135m}"
atlas="${N2G_ATLAS:-${N2G_CACHE:-$HOME/.cache/n2g-mcp}/atlas/$model.jsonl}"
scan="stores/$model.scan.npz"
shipped="stores/$model.jsonl.gz"
mkdir -p "$(dirname "$atlas")"
if [[ "${1:-}" == "induction" ]]; then
    ids=$(.venv/bin/python -c "
from pathlib import Path
from builder.probes.induction import induction_probe
from builder.models import load_model
from store.names import neuron_id
from store.scanfile import ScanFile
model = load_model('$model')
scan = ScanFile(Path('$scan'))
layers = range(model.n_layers)
probe = induction_probe(model, layers, max_activation={layer: scan.max_activation[layer] for layer in layers})
print(','.join(neuron_id(r.layer, r.neuron) for r in probe.scores[:${2:-50}]))")
    echo "the probe's best ${2:-50}: $ids"
    time "$n2g" build --model "$model" --ids "$ids" --rebuild --store "${atlas%.jsonl}.induction.jsonl" --scan-file "$scan"
    "$n2g" store compact --scan-file "$scan" "$shipped" "${atlas%.jsonl}.induction.jsonl" "$shipped"
elif [[ "${1:-}" == "ordinary" ]]; then
    # Issue 28: the shipped graphs' fitted paths calibrated on ordinary text and scored on the
    # held-out documents (the prune, saliency and fit stages are the default's, so only the
    # calibration runs). Each layer range has its own file, so ranges build side by side:
    #   scripts/build_atlas.sh ordinary 0-17 & scripts/build_atlas.sh ordinary 18-29
    # The calibrated graphs ship as stores/<model>.ordinary-L<first>-<last>.jsonl.gz beside the
    # fitted ones, which they override in the server (a later file wins); on a fresh machine a
    # range begins from the shipped parts, so the build goes on from what was committed.
    range="${2:-0-29}"
    part="${atlas%.jsonl}.ordinary.L$range.jsonl"
    # The scan beside the part, so its examples are references and the shipped parts' lines read.
    ln -sf "$PWD/$scan" "$(dirname "$atlas")/$(basename "$scan")"
    if [[ ! -e "$part" ]]; then  # the committed parts' graphs, under the first part's header
        first=1
        for piece in stores/"$model".ordinary-L*.jsonl.gz; do
            [[ -f "$piece" ]] || continue
            gzip -dc "$piece" | tail -n +$((first ? 1 : 2)) >> "$part.tmp"; first=0
        done
        [[ -e "$part.tmp" ]] && mv "$part.tmp" "$part"
    fi
    # Without the short-text protocol: measuring the cut test windows again was 97% of a layer-20
    # neuron's calibration (the fitted atlas keeps those figures).
    time "$n2g" build --model "$model" --ordinary --paths-from "$shipped" --no-short-texts --layers "$range" --scan-file "$scan" \
        --store "$part"
elif [[ "${1:-}" == "ship-ordinary" ]]; then
    # Five layers a file (about 50 MB: a calibrated graph holds ~650 paths), so no file passes 100 MB.
    # The parts' lines are sorted into the five-layer groups first (one read of each part), then
    # each group is compacted into its shipped file.
    groups=$(mktemp -d)
    .venv/bin/python - "$groups" "${atlas%.jsonl}".ordinary.L*.jsonl <<'PY'
import re, sys
from pathlib import Path
out, parts = Path(sys.argv[1]), sys.argv[2:]
files = {}
for part in parts:
    with open(part, "rb") as lines:
        header = next(lines)
        for line in lines:
            group = int(re.search(rb'"layer":(\d+)', line[:200])[1]) // 5
            if group not in files:
                files[group] = open(out / f"L{group * 5:02d}-{group * 5 + 4:02d}.jsonl", "wb")
                files[group].write(header)
            files[group].write(line)
for f in files.values():
    f.close()
PY
    for group in "$groups"/L*.jsonl; do
        out="stores/$model.ordinary-$(basename "$group").gz"
        "$n2g" store compact --scan-file "$scan" "$group" "$groups/new.gz"
        # A part whose graphs did not change is kept as committed (its header's date would differ).
        if [[ -f "$out" ]] && cmp -s <(gzip -dc "$out" | tail -n +2) <(gzip -dc "$groups/new.gz" | tail -n +2); then
            echo "$out: no graph changed, kept"
            rm "$groups/new.gz"
        else
            mv "$groups/new.gz" "$out"
        fi
    done
    rm -r "$groups"
    .venv/bin/python benchmarks/calibrated_atlas.py --model "$model"
elif [[ "${1:-}" == "ship" ]]; then
    "$n2g" store compact --scan-file "$scan" "$shipped" "$atlas" "$shipped"
    "$n2g" eval --store "$atlas"
else
    if [[ ! -e "$atlas" ]]; then
        # A fresh machine: begin the atlas with the shipped graphs that today's method built (their
        # build record holds the default config), so a build cut off in an earlier session resumes
        # from what was committed rather than from nothing.
        .venv/bin/python - "$shipped" "$atlas" <<'PY'
import gzip, sys
import orjson
from builder.config import BuildConfig
shipped, atlas = sys.argv[1:]
default = orjson.loads(orjson.dumps(BuildConfig().to_dict()))
kept = 0
with gzip.open(shipped, "rb") as lines, open(atlas + ".part", "wb") as out:
    out.write(next(lines))  # the header: same model, shape and scan file as the build's
    for line in lines:
        if orjson.loads(line)["build"]["config"] == default:
            out.write(line)
            kept += 1
print(f"atlas begun with {kept:,} shipped graphs built with today's method")
PY
        mv "$atlas.part" "$atlas"
    fi
    time "$n2g" build --model "$model" --layers "${1:-0-29}" --store "$atlas" --scan-file "$scan"
fi
