"""Chaos soak: a long CSV stream with hostile lines of every kind, through ``edge-detector detect``.

    python benchmarks/chaos.py BUNDLE [--readings 1000000] [--hostile 0.01] [--json chaos.json]

The readings are the synthetic generator's (seed 42: the demo bundle's sensors), one a minute.
A share ``--hostile`` of them is replaced by hostile lines, cycling through every kind the
unattended-gateway issue found (invalid UTF-8, JSON nested 1,000 deep, a 400-digit integer,
timestamp 1e999999, a 5,000-digit timestamp, a 100 kB line, NUL bytes, a clock jump to 2100
and back to 1970, a wrong field count, NaN, an empty line). ``detect --stats`` runs as a child
process with its events and rejections written to files; its RSS is read from /proc every
half second.

Checks, printed and written to the JSON: every line is accounted for (read = lines after the
header = scored + rejected), every hostile line and no other is rejected, each rejection names
its line, the events are exactly the scored readings, the exit code is 0, and RSS grows by at
most 5 MB from the first sample after 5% of the stream to the end.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from edge_detector.export.files import write_json

HOSTILE = {
    "invalid UTF-8": lambda t: b"%d,51.0,\xff\xfe,60,45" % t,
    "JSON nested 1,000 deep": lambda t: b'{"sensor_1": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "a 400-digit number": lambda t: b"%d," % t + b"9" * 400 + b",40,60,45",
    "timestamp 1e999999": lambda t: b"1e999999,50,40,60,45",
    "a 5,000-digit timestamp": lambda t: b"9" * 5000 + b",50,40,60,45",
    "a 100 kB line": lambda t: b"%d," % t + b"1" * 100_000,
    "NUL bytes": lambda t: b"\x00" * 64,
    "a clock jump to 2100": lambda t: b"4102444800,50,40,60,45",
    "a clock step back to 1970": lambda t: b"60,50,40,60,45",
    "a wrong field count": lambda t: b"%d,50,40" % t,
    "NaN": lambda t: b"%d,nan,40,60,45" % t,
    "an empty line": lambda t: b"",
}
GROWTH_LIMIT_MB = 5.0


def chaos_lines(n: int, hostile_share: float, seed: int = 42) -> Tuple[List[bytes], Dict[int, str]]:
    """The stream's lines (header first) and {line number: hostile kind} of the hostile ones."""
    from edge_detector.export.data import generate
    values = generate(n=max(n, 1000), seed=seed).values[:n]
    t0 = 1_700_000_000
    lines = [b"timestamp,sensor_1,sensor_2,sensor_3,sensor_4"]
    lines += [b"%d,%.6f,%.6f,%.6f,%.6f" % (t0 + 60 * i, *row) for i, row in enumerate(values)]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(np.arange(1, n + 1), size=int(round(n * hostile_share)), replace=False))
    kinds = list(HOSTILE)
    hostile = {}
    for k, index in enumerate(picks):
        kind = kinds[k % len(kinds)]
        lines[index] = HOSTILE[kind](t0 + 60 * (index - 1))
        hostile[int(index) + 1] = kind                  # line numbers are 1-based, the header is line 1
    return lines, hostile


def rss_mb(pid: int) -> float:
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_detect(bundle: str, path: str, workdir: str, total: int) -> dict:
    """detect as a child process, its RSS sampled; returns exit code, counts, samples and seconds."""
    out, err = os.path.join(workdir, "events.jsonl"), os.path.join(workdir, "errors.jsonl")
    cmd = [sys.executable, "-m", "edge_detector.cli", "detect", bundle, path, "--out", out, "--stats"]
    samples = []
    t0 = time.time()
    with open(err, "wb") as err_fh:
        proc = subprocess.Popen(cmd, stderr=err_fh)
        while proc.poll() is None:
            try:
                done = os.path.getsize(out) if os.path.exists(out) else 0
                samples.append((time.time() - t0, done, rss_mb(proc.pid)))
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
    return {"returncode": proc.returncode, "seconds": time.time() - t0, "samples": samples, "events": out,
            "errors": err}


def account(lines: List[bytes], hostile: Dict[int, str], run: dict) -> dict:
    """Every line accounted for: the checks of the module docstring."""
    with open(run["errors"], "rb") as fh:
        records = [json.loads(x) for x in fh if x.strip()]
    stats = records[-1]["stats"]
    rejected = {r["line"]: r["error"] for r in records if "error" in r}
    with open(run["events"], "rb") as fh:
        event_lines = [json.loads(x)["line"] for x in fh if x.strip()]
    n = len(lines) - 1
    expected_scored = [i for i in range(2, n + 2) if i not in hostile]
    return {"lines_after_header": n, "stats": stats,
            "read_equals_lines": stats["read"] == n,
            "read_equals_scored_plus_rejected": stats["read"] == stats["scored"] + stats["rejected"],
            "rejected_are_the_hostile_lines": set(rejected) == set(hostile),
            "events_are_the_other_lines": event_lines == expected_scored,
            "reasons_by_kind": {kind: sorted({rejected.get(line, "NOT REJECTED")[:60] for line, k in hostile.items()
                                              if k == kind})[:2] for kind in HOSTILE}}


def rss_growth(samples: list, total_bytes_out: int) -> dict:
    """RSS at the first sample past 5% of the output, at the end, and the peak (MB)."""
    live = [s for s in samples if s[2] == s[2]]
    start = next((s for s in live if s[1] >= 0.05 * total_bytes_out), live[0])
    end = live[-1]
    return {"start_mb": round(start[2], 2), "start_s": round(start[0], 1), "end_mb": round(end[2], 2),
            "peak_mb": round(max(s[2] for s in live), 2), "growth_mb": round(end[2] - start[2], 2),
            "samples": len(live)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--hostile", type=float, default=0.01, help="share of lines replaced by hostile ones")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        lines, hostile = chaos_lines(args.readings, args.hostile, args.seed)
        path = os.path.join(workdir, "chaos.csv")
        with open(path, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
        print("stream: %d lines after the header, %d hostile (%s), %.0f MB"
              % (len(lines) - 1, len(hostile), ", ".join(HOSTILE), os.path.getsize(path) / 2**20), flush=True)
        run = run_detect(args.bundle, path, workdir, len(lines) - 1)
        checks = account(lines, hostile, run)
        rss = rss_growth(run["samples"], os.path.getsize(run["events"]))
    ok = (run["returncode"] == 0 and checks["read_equals_lines"] and checks["read_equals_scored_plus_rejected"]
          and checks["rejected_are_the_hostile_lines"] and checks["events_are_the_other_lines"]
          and rss["growth_mb"] <= GROWTH_LIMIT_MB)
    report = {"readings": args.readings, "hostile": len(hostile), "returncode": run["returncode"],
              "seconds": round(run["seconds"], 1), "readings_per_s": round(args.readings / run["seconds"], 1),
              "rss": rss, "checks": checks, "ok": ok}
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
