"""Firmware-script example: import the runtime package and score readings in a loop.

Copy runtime/ and bundle/ (or unpack gateway.tar.gz) next to this script, replace
``read_sensors`` with the device's own I/O, and run ``python3 firmware_example.py``.
Needs Python >= 3.9 and NumPy >= 1.24 only.

    python3 firmware_example.py --bundle bundle/ --readings readings.csv   # replay a CSV (a test)
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from runtime import Detector, InputError, Reading, read_lines  # noqa: E402  (runtime/ sits beside this script)


def read_sensors(source):
    """One reading per call: a list of floats in the bundle's sensor order (replace with real I/O)."""
    return next(source, None)


def alarm(result, sensors):
    """What the firmware does on an anomaly: here, one JSON line on stdout."""
    top = sorted(result.contributions.items(), key=lambda kv: -kv[1])[:3] if result.contributions else []
    print(json.dumps({"alarm": True, "stage1": round(result.stage1, 6), "stage2": round(result.stage2, 6),
                      "top_sensors": [name for name, _ in top]}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=os.path.join(HERE, "bundle"))
    parser.add_argument("--readings", required=True, help="CSV to replay in place of live sensors")
    parser.add_argument("--period", type=float, default=0.0, help="seconds between readings (0: as fast as possible)")
    args = parser.parse_args(argv)

    detector = Detector.load(args.bundle)                  # verifies every file's sha256
    with open(args.readings, encoding="utf-8", newline="") as fh:
        rows = [item.values.tolist() for item in read_lines(fh, detector.sensors) if isinstance(item, Reading)]
    source = iter(rows)
    scored = alarms = 0
    while True:
        reading = read_sensors(source)
        if reading is None:
            break
        try:
            result = detector.score_one(reading)
        except InputError as exc:                          # a bad reading: skip it, keep the state
            print(json.dumps({"error": str(exc)}), file=sys.stderr, flush=True)
            continue
        scored += 1
        if result.is_anomaly:
            alarms += 1
            alarm(result, detector.sensors)
        if args.period:
            time.sleep(args.period)
    print(json.dumps({"scored": scored, "alarms": alarms}), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
