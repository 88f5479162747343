"""The device's command line: ``python3 -m runtime bundle/ [readings.csv] [options]``, and
``python3 -m runtime bench bundle/ readings.csv`` for the device bench (``bench``).

Scores CSV or JSON Lines readings from stdin or a file with a bundle. Events go to stdout,
rejected lines to stderr as {"line": N, "error": "..."}, and the counts to stderr at the end.
SIGHUP (or, with --watch, a change of the bundle folder) swaps in a new bundle between two readings; an
unchanged bundle costs nothing. The learnt state is checkpointed under the state folder (--state-dir or
$STATE_DIRECTORY) and restored at the next start of the same bundle.
"""
import argparse
import json
import sys
from typing import List, Optional

from .clock import DEFAULT_GAP_FACTOR, DEFAULT_MAX_JUMP_S
from .detector import MODES
from .engines import ENGINE_CHOICES
from .schema import VARIANTS
from .errors import BundleError, InputError
from .events import OUTPUT_FORMATS
from .checkpoint import checkpoint_folder
from .sensor_health import DEFAULT_MAX_FILL
from .stream import MISSING_POLICIES, StreamPolicy, detect
from .trust import load_trust


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m runtime", description="Score CSV or JSON Lines readings from stdin (or a file) with an "
        "edge-detector bundle. Events go to stdout, one per reading; rejected lines go to stderr as "
        '{"line": N, "error": "..."}; the counts go to stderr at the end. SIGTERM/SIGINT stop cleanly. SIGHUP '
        "loads the bundle again, verified as at the start, and swaps it in between two readings (one that does not "
        "verify is refused with a notice, and the old one keeps scoring). Options may come before or after the "
        "input file.")
    p.add_argument("bundle", help="the bundle folder (edge-detector export wrote it)")
    p.add_argument("input", nargs="?", default="-", help="CSV with a header, or JSON Lines (default: stdin)")
    p.add_argument("--engine", default="numpy", choices=ENGINE_CHOICES,
                   help="numpy (default): both stages in NumPy; tflite: stage 2 through LiteRT (pip install "
                   "ai-edge-litert); onnx: stage 1 through onnxruntime; auto: each where installed, said on stderr")
    p.add_argument("--variant", default=None, choices=VARIANTS,
                   help="a quantized stage-2 model of the bundle (export --quantize), with --engine tflite")
    p.add_argument("--mode", default="hybrid", choices=MODES,
                   help="hybrid (default): stage 2 only where stage 1 flags; lstm: stage 2 on every reading; "
                   "iforest: stage 1 alone")
    p.add_argument("--alarms-only", action="store_true", help="write anomalies only")
    p.add_argument("--missing", default="reject", choices=MISSING_POLICIES,
                   help="an empty sensor field: reject the line (default), hold the sensor's last value, or "
                   "interpolate to its next value")
    p.add_argument("--max-fill", type=int, default=DEFAULT_MAX_FILL, metavar="N",
                   help="readings in a row one sensor may be filled (hold-last, interpolate); after that it is "
                   "reported dead and readings without it are rejected until it reports again (default %(default)s; "
                   "0: no limit)")
    p.add_argument("--stuck-after", type=int, default=None, metavar="N",
                   help="readings of one unchanged value before a sensor (one that moved in training) is reported "
                   "stuck (default: 3 warm-ups, at least 30, and over twice training's longest run; 0: never)")
    p.add_argument("--gap-factor", type=float, default=DEFAULT_GAP_FACTOR,
                   help="a gap longer than this many median intervals resets the window state (default %(default)s; "
                   "0: never)")
    p.add_argument("--max-jump", type=float, default=DEFAULT_MAX_JUMP_S,
                   help="seconds a reading's time may jump ahead; a bigger jump or a step back is rejected until 3 "
                   "readings agree on the new time (default %(default)s; 0: any jump)")
    p.add_argument("--trusted-keys", default=None, metavar="FILE",
                   help="OpenSSH public key(s): run only bundles signed by one of them, never an older version")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="where accepted bundle versions are recorded (default: $STATE_DIRECTORY or "
                   "~/.local/state/edge-detector), and, given or with $STATE_DIRECTORY set, where the learnt "
                   "state is checkpointed and restored from at the next start of the same bundle")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="neither restore nor write the checkpoint of the learnt state")
    p.add_argument("--stream-col", default=None, metavar="COLUMN",
                   help="the column (or JSON key) naming each reading's machine, when one input carries several "
                   "machines of one model: each keeps its own state; events carry the key as \"stream\"")
    p.add_argument("--watch", action="store_true",
                   help="also reload the bundle when its folder or manifest.json changes (a new folder renamed into "
                   "place, a manifest rewritten): checked about once a second, between readings")
    p.add_argument("--format", default="jsonl", choices=OUTPUT_FORMATS,
                   help="jsonl (default): one JSON event per line; influx: InfluxDB line protocol (Telegraf "
                   "inputs.execd)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .device_bench import main as bench  # noqa: PLC0415 (only the bench needs it)
        return bench(argv[1:])
    args = parser().parse_intermixed_args(argv)
    policy = StreamPolicy(missing=args.missing, gap_factor=args.gap_factor, max_jump=args.max_jump,
                          max_fill=args.max_fill, stuck_after=args.stuck_after)
    try:
        trust = load_trust(args.trusted_keys, args.state_dir)
        stats = detect(args.bundle, args.input, "-", sys.stderr, engine=args.engine, mode=args.mode,
                       alarms_only=args.alarms_only, policy=policy, output_format=args.format, trust=trust,
                       variant=args.variant, stream_col=args.stream_col, watch=args.watch,
                       checkpoint_dir=None if args.no_checkpoint else checkpoint_folder(args.state_dir))
    except (BundleError, InputError, OSError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    sys.stderr.write(json.dumps({"stats": stats}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
