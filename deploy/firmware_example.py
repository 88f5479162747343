"""Firmware-script example: import the runtime package and score readings in a loop.

Copy runtime/ and bundle/ (or unpack gateway.tar.gz) next to this script, replace
``read_sensors`` with the device's own I/O, and run it. Needs Python >= 3.9 and NumPy >= 1.24 only.
Until ``read_sensors`` reads real sensors it replays CSV or JSON Lines readings:

    python3 firmware_example.py --bundle bundle/ --readings readings.csv   # replay a file
    python3 firmware_example.py --bundle bundle/ < readings.csv             # or stdin
    python3 firmware_example.py --trusted-keys owner.pub --state-dir state/  # only the owner's bundles

On a device, pin the owner's keys (``--trusted-keys``): the bundle must then be signed by one of them
and not older than the last one accepted (recorded in ``--state-dir``). Without keys any bundle
whose checksums match is scored, and the script says so on stderr.

It finds the runtime beside itself (a device), else the installed edge-detector package, else
the repository's edge_detector/runtime (so it also runs in place from deploy/). Alarms go to
stdout as JSON lines with their line, time and scores; rejected readings go to stderr with their
line and reason, and the loop goes on; the counts go to stderr at the end.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def import_runtime():
    """The runtime package: beside this script, else installed, else in the repository around it."""
    if os.path.isfile(os.path.join(HERE, "runtime", "__init__.py")):
        sys.path.insert(0, HERE)
        import runtime  # noqa: PLC0415
        return runtime
    try:
        from edge_detector import runtime  # noqa: PLC0415
        return runtime
    except ImportError:
        pass
    repo = os.path.join(HERE, os.pardir, "edge_detector")
    if os.path.isfile(os.path.join(repo, "runtime", "__init__.py")):
        sys.path.insert(0, repo)
        import runtime  # noqa: PLC0415
        return runtime
    sys.exit("firmware_example.py: no runtime found: put the runtime/ folder beside this script "
             "(edge-detector package bundle/ --out gateway.tar.gz puts both in one archive)")


def read_sensors(items):
    """The next reading from ``items`` (replace with real I/O): a Reading, a Rejected line, or None at the end."""
    return next(items, None)


def alarm(reading, result):
    """What the firmware does on an anomaly: here, one JSON line on stdout."""
    top = sorted(result.contributions.items(), key=lambda kv: -kv[1])[:3] if result.contributions else []
    print(json.dumps({"alarm": True, "line": reading.line, "timestamp": reading.timestamp,
                      "stage1": round(result.stage1, 6), "stage2": round(result.stage2, 6),
                      "top_sensors": [name for name, _ in top]}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=os.path.join(HERE, "bundle"), help="the bundle folder (default: beside)")
    parser.add_argument("--readings", default="-", help="CSV or JSON Lines to replay in place of live sensors "
                        "(default: stdin)")
    parser.add_argument("--period", type=float, default=0.0, help="seconds between readings (0: as fast as possible)")
    parser.add_argument("--trusted-keys", default=None, help="the owner's OpenSSH public key(s): run only bundles "
                        "signed by one of them, never an older version")
    parser.add_argument("--state-dir", default=None, help="where accepted bundle versions are recorded")
    args = parser.parse_args(argv)
    runtime = import_runtime()
    if not args.trusted_keys:
        print("firmware_example.py: no --trusted-keys: the bundle's signature is not checked", file=sys.stderr)
    try:
        trust = runtime.trust.load_trust(args.trusted_keys, args.state_dir)
        detector = runtime.Detector.load(args.bundle, trust=trust)  # verifies every file's sha256 (and signature)
    except runtime.BundleError as exc:
        sys.exit("firmware_example.py: %s" % exc)
    source = sys.stdin.buffer if args.readings == "-" else open(args.readings, "rb")  # noqa: SIM115 (closed below)
    items = runtime.read_lines(runtime.readings.byte_lines(source), detector.sensors)
    counts = {"scored": 0, "rejected": 0, "alarms": 0}
    while True:
        item = read_sensors(items)
        if item is None:
            break
        if not isinstance(item, runtime.Reading):                   # a line that is no reading: say why, go on
            if isinstance(item, runtime.Rejected):
                counts["rejected"] += 1
                print(json.dumps({"line": item.line, "error": item.reason}), file=sys.stderr, flush=True)
            continue
        try:
            result = detector.score_one(item.values)
        except runtime.InputError as exc:                          # a missing or bad value: the state is kept
            counts["rejected"] += 1
            print(json.dumps({"line": item.line, "error": str(exc)}), file=sys.stderr, flush=True)
            continue
        counts["scored"] += 1
        if result.is_anomaly:
            counts["alarms"] += 1
            alarm(item, result)
        if args.period:
            time.sleep(args.period)
    if source is not sys.stdin.buffer:
        source.close()
    print(json.dumps(counts), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
