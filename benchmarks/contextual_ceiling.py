"""How high can point-wise F1 go on the synthetic data? Ceilings from detectors that know the answer.

    python benchmarks/contextual_ceiling.py --seeds 42,43,44,45,46 [--measured synthetic.json] [--json OUT]

Scored on the same chronological test split as benchmarks/synthetic.py (the last 20%). All
but the last row assume that every non-contextual anomaly is caught, so they are ceilings:

- ``no context``: every spike, drop and collective reading alarms, nothing else does. The
  contextual readings (sensor 3 reflected about its 50-reading window mean) stay missed.
- The same, plus an oracle for the contextual readings. The oracle knows the generating model:
  it takes sensor 3's residual from the true noise-free signal (baseline, trend and daily sine;
  ``SignalParams.expected``), in units of the true noise sigma. A reflection leaves a straight
  line there, from +D at its first reading to -D at its last. Two oracles, both causal:
  - ``matched filter``: at each reading, fit that line to every possible start among the last
    50 readings and keep the best fit (a likelihood ratio; chi-square with 1 dof on normal data).
  - ``residual energy``: the sum of squares of the residual over the last 10, 20, 30 or 50
    readings, as a z-score. This is what a reconstruction-error score could at best add up,
    with an autoencoder that reconstructs the noise-free signal exactly.
- ``cross-sensor MF``: no oracle for the reflections (still every other anomaly caught). The
  same matched filter on a residual learned from the training data: sensor 3 fitted on the
  other sensors (they share the cycle's phase) and time, less a local level
  (``cross_sensor_residual``). A first try at the third model that catching reflections would
  need, not a tuned one.

Each statistic gets two thresholds. ``normal`` is a high quantile (``--normal-quantile``,
default 0.999) of the statistic on training readings that could not have seen an anomaly (no
contextual reading in the last 50 readings; for the cross-sensor residual, no contextual or
collective reading in the last 300 and no labelled reading in the last 5), which a calibrated
detector could use. ``best`` maximises F1 on the test
labels: an upper bound, not a result.

For each contextual window in a test split it prints D/sigma, the reflection's size at its ends
against the noise (D = 50 * amplitude * omega * |cos(omega * t)| for a window centred at t), and
the matched filter's signal-to-noise ratio over the whole window (D/sigma * sqrt(sum g^2)).

With ``--measured synthetic.json`` (written by synthetic.py) it adds the hybrid's measured F1
and, per seed, how many more contextual readings the hybrid would have to catch there, with no
new false alarm and every other seed unchanged, for the five-seed mean to reach 0.70.
"""
import argparse
import json
import sys
from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge_detector.export.data import ANOMALY_KINDS, MINUTES_PER_DAY, generate
from edge_detector.export.files import write_json
from edge_detector.export.metrics import f1_from_counts, f1_score, split_start

REFLECTED = 50           # length of a contextual window in generate()
TARGET_F1 = 0.70         # issue 2's goal for the five-seed mean
NORMAL_QUANTILE = 0.999
ENERGY_SPANS = (10, 20, 30, 50)   # readings of reconstruction error a score could add up
LEVEL_BACK = 300                  # the cross-sensor residual's local level starts this far back


def reflection_template(length: int = REFLECTED) -> np.ndarray:
    """Residual a reflection leaves per unit of D: +1 at its first reading, -1 at its last."""
    return 1.0 - 2.0 * np.arange(length) / (length - 1)


def matched_filter(residual: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Causal likelihood ratio of 'a reflection started 0..len(template)-1 readings ago'.

    [time] residual in noise-sigma units -> [time] statistic (chi-square, 1 dof, under no anomaly).

    >>> g = reflection_template(5)
    >>> stat = matched_filter(np.concatenate([np.zeros(3), 4 * g]), g)
    >>> int(np.argmax(stat)), round(float(stat[-1]), 3)        # best fit at the window's end
    (7, 40.0)
    """
    m = len(template)
    windows = sliding_window_view(np.concatenate([np.zeros(m - 1), residual]), m)   # [time, m]: t-m+1..t
    best = np.zeros(len(residual))
    for length in range(1, m + 1):                     # the start was length-1 readings ago
        g = template[:length]
        best = np.maximum(best, (windows[:, m - length:] @ g) ** 2 / (g @ g))
    return best


def best_threshold_f1(labels: np.ndarray, base: np.ndarray, stat: np.ndarray) -> tuple:
    """The F1 of ``base | stat >= threshold`` at its best threshold: (f1, threshold)."""
    best = (f1_score(labels, base), float("inf"))
    for threshold in np.unique(stat[~base]):
        f1 = f1_score(labels, base | (stat >= threshold))
        if f1 > best[0]:
            best = (f1, float(threshold))
    return best


def extra_needed(tp: int, fp: int, fn: int, gain: float) -> Optional[int]:
    """Fewest more true alarms (taken from the misses, no new false alarm) that raise F1 by ``gain``."""
    target = f1_from_counts(tp, fp, fn) + gain - 1e-12
    for k in range(fn + 1):
        if f1_from_counts(tp + k, fp, fn - k) >= target:
            return k
    return None


def residual_energy(residual: np.ndarray, spans=ENERGY_SPANS) -> np.ndarray:
    """What a reconstruction error can at best see: the squared residual over the last L readings.

    A perfect autoencoder would reconstruct the noise-free normal signal, so its error over its
    last L readings would be this sum. [time] residual in noise-sigma units -> [time]: the most,
    over L in ``spans``, of (sum of squares - L) / sqrt(2L), a z-score under no anomaly.

    >>> z = residual_energy(np.array([1.0, -1.0, 3.0, 1.0]), spans=(2,))
    >>> bool(z[0] == -np.inf), z[1:].tolist()           # (1+1-2)/2, (1+9-2)/2, (9+1-2)/2
    (True, [0.0, 4.0, 4.0])
    """
    squares = np.concatenate([[0.0], np.cumsum(residual ** 2)])
    best = np.full(len(residual), -np.inf)
    for span in spans:
        z = np.full(len(residual), -np.inf)
        z[span - 1:] = (squares[span:] - squares[:-span] - span) / np.sqrt(2 * span)
        best = np.maximum(best, z)
    return best


def cross_sensor_residual(values: np.ndarray, labels: np.ndarray, start: int) -> np.ndarray:
    """Sensor 3's residual as a detector could learn it from training data, without the oracle.

    [time, sensors] -> [time] residual in units of its training standard deviation (0 for the
    first LEVEL_BACK readings). The sensors share the daily cycle's phase, so sensor 3 is fitted
    (least squares, on training readings at least 5 away from any labelled anomaly) on the
    others and time. The others first pass a causal 5-reading median, so that their spikes and
    drops do not leak in. What the fit leaves (baseline and trend drift) goes with a local level:
    the mean residual from LEVEL_BACK to REFLECTED readings back, before any reflection in view.
    """
    n = len(values)
    t = np.arange(n, dtype=np.float64)
    others = np.vstack([values[:4], np.median(sliding_window_view(values, 5, axis=0), axis=-1)])[:, [0, 1, 3]]
    design = np.column_stack([others, t, np.ones(n)])               # [time, 5]
    near = sliding_window_view(np.concatenate([np.zeros(5, bool), labels]), 11)[:n].any(axis=1)
    fit = ~near[:start]
    coef = np.linalg.lstsq(design[:start][fit], values[:start, 2][fit], rcond=None)[0]
    error = values[:, 2] - design @ coef
    sums = np.concatenate([[0.0], np.cumsum(error)])
    level = np.zeros(n)
    level[LEVEL_BACK:] = (sums[LEVEL_BACK - REFLECTED:n - REFLECTED] - sums[:n - LEVEL_BACK]) / (LEVEL_BACK - REFLECTED)
    residual = (error - level) / np.std(error[:start][fit])
    residual[:LEVEL_BACK] = 0.0
    return residual


def ceiling_seed(seed: int, normal_quantile: float = NORMAL_QUANTILE) -> dict:
    data = generate(seed=seed)
    n = len(data.values)
    start = split_start(n, 0.2)
    kinds = np.array(data.kinds)
    labels = kinds != ""
    context = kinds == "contextual"
    params = data.signal
    residual = (data.values[:, 2] - params.expected(np.arange(n, dtype=np.float64))[:, 2]) / params.noise[2]

    def clear_of(anomalous: np.ndarray, back: int) -> np.ndarray:
        # training readings whose last ``back`` readings hold none: what a normal-data threshold may use
        seen = sliding_window_view(np.concatenate([np.zeros(back - 1, bool), anomalous]), back).any(axis=1)
        return ~seen[:start]
    y, ctx = labels[start:], context[start:]
    base = y & ~ctx                                       # every non-contextual anomaly, caught
    out = {"test_mix": {k: int(np.sum(kinds[start:] == k)) for k in ANOMALY_KINDS},
           "no_context": f1_score(y, base)}
    windows = [{"start": int(start + s)} for s in np.flatnonzero(ctx & ~np.concatenate([[False], ctx[:-1]]))]
    clear = clear_of(context, REFLECTED)
    warm = np.arange(start) >= LEVEL_BACK
    statistics = (
        ("matched", matched_filter(residual, reflection_template()), clear),
        ("energy", residual_energy(residual), clear),
        ("cross", matched_filter(cross_sensor_residual(data.values, labels, start), reflection_template()),
         # the others' spikes and drops stay out of the residual (the 5-reading median), but a
         # reflection or a drift reaches it through the level and the fit for LEVEL_BACK readings
         clear_of(context | (kinds == "collective"), LEVEL_BACK) & clear_of(labels, 5) & warm),
    )
    for name, stat, calibration in statistics:
        normal_threshold = float(np.quantile(stat[:start][calibration], normal_quantile))
        st = stat[start:]
        best_f1, best_threshold = best_threshold_f1(y, base, st)
        for which, threshold, f1 in (("normal", normal_threshold, f1_score(y, base | (st >= normal_threshold))),
                                     ("best", best_threshold, best_f1)):
            out["%s_%s" % (name, which)] = {"f1": f1, "threshold": threshold,
                                            "false_alarms": int(np.sum((st >= threshold) & ~y))}
            for w in windows:
                w["%s_%s_caught" % (name, which)] = int(np.sum(stat[w["start"]:w["start"] + REFLECTED] >= threshold))
    omega = 2 * np.pi / MINUTES_PER_DAY
    g2 = float(reflection_template() @ reflection_template())
    for w in windows:
        centre = w["start"] + (REFLECTED - 1) / 2
        w["d_over_sigma"] = float(REFLECTED * params.amplitude[2] * omega * abs(np.cos(omega * centre))
                                  / params.noise[2])
        w["matched_snr"] = w["d_over_sigma"] * np.sqrt(g2)
    out["contextual_windows"] = windows
    return out


CEILINGS = ("no_context", "matched_normal", "matched_best", "energy_normal", "energy_best", "cross_normal",
            "cross_best")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--measured", default=None, help="synthetic.py's --json output, for the hybrid's F1")
    parser.add_argument("--normal-quantile", type=float, default=NORMAL_QUANTILE,
                        help="the normal-data threshold's quantile (default %(default)s)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 0 < args.normal_quantile < 1:
        parser.error("--normal-quantile is %g; it must be between 0 and 1" % args.normal_quantile)
    seeds = [int(s) for s in args.seeds.split(",")]
    measured = json.load(open(args.measured))["per_seed"] if args.measured else {}
    per_seed = {str(seed): ceiling_seed(seed, args.normal_quantile) for seed in seeds}

    def f1(r, key):
        return r[key] if key == "no_context" else r[key]["f1"]

    hybrid = {s: measured[s]["hybrid"] for s in per_seed if s in measured}
    deficit = TARGET_F1 * len(seeds) - sum(h["f1"] for h in hybrid.values()) if len(hybrid) == len(seeds) else None
    print("F1 on each test split; (n): false alarms of the contextual detector;"
          " normal threshold: the %g quantile" % args.normal_quantile)
    print("                                         oracle                      learned from data")
    print("                              no       matched filter        residual energy       cross-sensor MF")
    print("seed  spike drop ctx coll  context    normal      best      normal      best      normal      best"
          "   hybrid  more ctx needed")
    for s, r in per_seed.items():
        mix = r["test_mix"]
        h = hybrid.get(s)
        needed = ""
        if h is not None and deficit is not None and deficit > 0 and mix["contextual"]:
            k = extra_needed(h["tp"], h["fp"], h["fn"], deficit)
            needed = ("%d of %d" % (k, mix["contextual"]) if k is not None and k <= mix["contextual"]
                      else "all %d would not be enough" % mix["contextual"])
        cells = "".join(" %5.3f (%2d)" % (r[k]["f1"], r[k]["false_alarms"]) for k in CEILINGS[1:])
        print(("%4s  %5d %4d %3d %4d    %5.3f %s   %6s  %s" % (
            s, mix["spike"], mix["drop"], mix["contextual"], mix["collective"], r["no_context"], cells,
            "%.3f" % h["f1"] if h else "-", needed)).rstrip())
    means = {k: float(np.mean([f1(r, k) for r in per_seed.values()])) for k in CEILINGS}
    print("mean                        %s   %6s" % ("".join(" %5.3f     " % means[k] for k in CEILINGS),
                                                     "%.3f" % np.mean([h["f1"] for h in hybrid.values()])
                                                     if deficit is not None else "-"))
    print("\ncontextual windows in the test splits (D/sigma: the reflection's size at its ends against the noise);"
          "\nreadings of 50 caught at the normal / best threshold")
    for s, r in per_seed.items():
        for w in r["contextual_windows"]:
            print("seed %s, window at %d: D/sigma %.2f, matched-filter SNR %.1f; matched filter %d / %d,"
                  " residual energy %d / %d, cross-sensor %d / %d" % (
                      s, w["start"], w["d_over_sigma"], w["matched_snr"], w["matched_normal_caught"],
                      w["matched_best_caught"], w["energy_normal_caught"], w["energy_best_caught"],
                      w["cross_normal_caught"], w["cross_best_caught"]))
    if args.json:
        write_json(args.json, {"seeds": seeds, "normal_quantile": args.normal_quantile, "mean": means,
                               "per_seed": per_seed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
