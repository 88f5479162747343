#!/usr/bin/env bash
# A refactor's before/after check: the outputs that must not change, written to one folder.
#   tools/behaviour_snapshot.sh OUT [SHARED]      (run in a checkout whose edge_detector is importable)
# Writes OUT/demo.txt (the demo's table), OUT/detect.jsonl and OUT/detect.influx (detect on the demo
# data), OUT/device.jsonl (the packaged runtime under a numpy-only venv), OUT/skab.json (one SKAB file).
# Compare two snapshots with: diff -r BEFORE AFTER (skab.json's timings are removed before writing).
set -euo pipefail
out=$(realpath -m "$1"); shared=$(realpath -m "${2:-../shared}")
mkdir -p "$out"; work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
here=$(pwd)
cd "$work"
edge-detector demo --dir demo-run 2>/dev/null | grep -v '^done in' > "$out/demo.txt"
edge-detector detect demo-run/bundle demo-run/data.csv > "$out/detect.jsonl" 2>/dev/null
edge-detector detect demo-run/bundle demo-run/data.csv --format influx > "$out/detect.influx" 2>/dev/null
edge-detector package demo-run/bundle --out gateway.tar.gz >/dev/null 2>&1
mkdir device && tar -xzf gateway.tar.gz -C device
python3 -m venv numpy-only && numpy-only/bin/pip install -q numpy >/dev/null 2>&1
head -2001 demo-run/data.csv > readings.csv
(cd device/gateway && env -u PYTHONPATH PYTHON="$work/numpy-only/bin/python" ./run.sh < "$work/readings.csv") > "$out/device.jsonl" 2>/dev/null
mkdir -p skab/valve1 skab/anomaly-free && cp "$shared/data/skab/valve1/0.csv" skab/valve1/ && cp "$shared/data/skab/anomaly-free/anomaly-free.csv" skab/anomaly-free/
python3 "$here/benchmarks/skab.py" --data skab --json skab-raw.json >/dev/null 2>&1
python3 - skab-raw.json "$out/skab.json" <<'PY'
import json, sys
def drop(o):
    if isinstance(o, dict):
        return {k: drop(v) for k, v in o.items() if not any(t in k for t in ("seconds", "_s", "time", "host"))}
    return [drop(v) for v in o] if isinstance(o, list) else o
json.dump(drop(json.load(open(sys.argv[1]))), open(sys.argv[2], "w"), indent=1, sort_keys=True)
PY
wc -l "$out"/*
