#!/usr/bin/env bash
# Run `edge-detector bench` on the synthetic demo data and on a SKAB file, 1 thread.
#   benchmarks/bench.sh [OUT_DIR]          (SKAB=path/to/skab to point elsewhere)
# Writes OUT_DIR/{synthetic,skab}/bench.{json,md} and plots; the tables go to stdout.
set -euo pipefail
out=${1:-bench-out}
skab=${SKAB:-$(dirname "$0")/../../shared/data/skab}
threads=${THREADS:-1}
mkdir -p "$out/synthetic" "$out/skab"

edge-detector generate --out "$out/synthetic/data.csv" --seed 42
edge-detector train "$out/synthetic/data.csv" --out "$out/synthetic/model"
edge-detector export "$out/synthetic/model" --out "$out/synthetic/bundle"
edge-detector bench "$out/synthetic/bundle" "$out/synthetic/data.csv" --model "$out/synthetic/model" \
    --threads "$threads" --json "$out/synthetic/bench.json" --markdown "$out/synthetic/bench.md" \
    --plots "$out/synthetic/plots"

if [ -f "$skab/valve1/0.csv" ]; then
    edge-detector train "$skab/valve1/0.csv" --out "$out/skab/model"
    edge-detector export "$out/skab/model" --out "$out/skab/bundle"
    edge-detector bench "$out/skab/bundle" "$skab/valve1/0.csv" --model "$out/skab/model" \
        --threads "$threads" --json "$out/skab/bench.json" --markdown "$out/skab/bench.md" --plots "$out/skab/plots"
else
    echo "SKAB data not found at $skab: skipped" >&2
fi
