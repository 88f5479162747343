"""The device's command line: ``python3 -m runtime bundle/ [readings.csv] [options]``.

Scores CSV or JSON Lines readings from stdin or a file with a bundle. Events go to stdout,
rejected lines to stderr as {"line": N, "error": "..."}, and the counts to stderr at the end.
"""
import argparse
import json
import sys
from typing import List, Optional

from .clock import DEFAULT_GAP_FACTOR, DEFAULT_MAX_JUMP_S
from .detector import MODES
from .engines import ENGINE_CHOICES
from .errors import BundleError, InputError
from .events import OUTPUT_FORMATS
from .stream import MISSING_POLICIES, StreamPolicy, detect
from .trust import load_trust


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m runtime", description="Score CSV or JSON Lines readings from stdin (or a file) with an "
        "edge-detector bundle. Events go to stdout as JSON Lines; rejected lines go to stderr as "
        '{"line": N, "error": "..."}; the counts go to stderr at the end. SIGTERM/SIGINT stop cleanly.')
    p.add_argument("bundle")
    p.add_argument("input", nargs="?", default="-")
    p.add_argument("--engine", default="numpy", choices=ENGINE_CHOICES)
    p.add_argument("--mode", default="hybrid", choices=MODES)
    p.add_argument("--alarms-only", action="store_true")
    p.add_argument("--missing", default="reject", choices=MISSING_POLICIES)
    p.add_argument("--gap-factor", type=float, default=DEFAULT_GAP_FACTOR)
    p.add_argument("--max-jump", type=float, default=DEFAULT_MAX_JUMP_S)
    p.add_argument("--trusted-keys", default=None)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--format", default="jsonl", choices=OUTPUT_FORMATS,
                   help="jsonl: one JSON event per line; influx: InfluxDB line protocol (Telegraf inputs.execd)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    policy = StreamPolicy(missing=args.missing, gap_factor=args.gap_factor, max_jump=args.max_jump)
    try:
        trust = load_trust(args.trusted_keys, args.state_dir)
        stats = detect(args.bundle, args.input, "-", sys.stderr, engine=args.engine, mode=args.mode,
                       alarms_only=args.alarms_only, policy=policy, output_format=args.format, trust=trust)
    except (BundleError, InputError, OSError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    sys.stderr.write(json.dumps({"stats": stats}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
