"""SKAB's changepoint score, written here from SKAB's own code (waico/SKAB ``core/metrics.py``, from ``tsad``).

SKAB scores changepoint detection the NAB way, but with its own windows and scoring curve
(``chp_score(true_cp, predicted_cp, metric="nab", window_width="60s",
anomaly_window_destination="righter")`` in every notebook):

- **windows**: each true changepoint (``changepoint == 1`` in a file's test part, rows 400..)
  opens a window ``[t_cp, t_cp + 60 s]`` in time, both ends included. Where a window reaches
  the next one's start, the next one starts where this one ends ("cut right window");
- **predicted changepoints**: the rows where the outlier alarm changes, ``|alarm_t - alarm_t-1|``,
  with the first test row taking its own alarm: onsets and ends of alarms both count;
- **a window with predicted changepoints** earns the curve's value at its first one:
  ``y(x) = (A_tp - A_fp) / 2 * (1 - tanh(x) / tanh(pi / 2)) + A_fp`` on 1000 points x from
  -pi/2 (the window's left edge: A_tp) to pi/2 (its right edge: A_fp), read at point
  ``int(1000 (t - left) / (right - left))``; a window without one costs A_fn;
- **every predicted changepoint outside all windows** costs A_fp (no sigmoid of the distance
  as in NAB proper, no probationary period);
- profiles (A_tp, A_fp, A_fn): standard (1, -0.11, -1), reward_low_FP_rate (1, -0.22, -1),
  reward_low_FN_rate (1, -0.11, -2); the corpus score is ``100 (S - S_null) / (S_perfect - S_null)``
  summed over files, with S_null = A_fn and S_perfect = A_tp per window, rounded to 2 decimals.

``python benchmarks/skab_changepoint.py --validate SKAB_REPO`` re-scores SKAB's published
predictions (``results/*.pkl``, read without pandas and without running any pickled code) against
the labels under ``SKAB_REPO/data`` and prints them beside the notebooks' published figures.
"""
import argparse
import csv
import math
import os
import pickle
import sys
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

WINDOW_SECONDS = 60
DETAIL = 1000                      # points on SKAB's scoring curve
PROFILES = {                       # A_tp, A_fp, A_fn (SKAB's table_of_coef: Standard, LowFP, LowFN)
    "standard": (1.0, -0.11, -1.0),
    "reward_low_FP_rate": (1.0, -0.22, -1.0),
    "reward_low_FN_rate": (1.0, -0.11, -2.0),
}
NS = 1_000_000_000


class FileResult(NamedTuple):
    windows: int                   # true changepoints (one window each)
    positions: Tuple[float, ...]   # for each detected window, where its first predicted changepoint lies (0 = left edge)
    missed: int                    # windows without a predicted changepoint
    false_positives: int           # predicted changepoints outside every window


def read_changepoints(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """A SKAB CSV's times (int64 ns since the epoch, [rows]) and its ``changepoint`` column (bool, [rows])."""
    with open(path, "r", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header = [h.strip().lower() for h in rows[0]]
    t, c = header.index("datetime"), header.index("changepoint")
    body = [r for r in rows[1:] if r]
    times = np.array([np.datetime64(r[t].strip().replace(" ", "T"), "ns") for r in body]).astype(np.int64)
    return times, np.array([float(r[c]) == 1.0 for r in body])


def alarm_changepoints(alarm: np.ndarray) -> np.ndarray:
    """SKAB's predicted changepoints from an outlier alarm: [rows] bool -> [rows] bool.

    >>> alarm_changepoints(np.array([1, 1, 0, 0, 1], bool)).astype(int).tolist()
    [1, 0, 1, 0, 1]
    """
    alarm = np.asarray(alarm, dtype=bool)
    out = np.zeros_like(alarm)
    if alarm.size:
        out[0] = alarm[0]
        out[1:] = alarm[1:] != alarm[:-1]
    return out


def windows(times: np.ndarray, changepoints: np.ndarray, seconds: float = WINDOW_SECONDS) -> List[Tuple[int, int]]:
    """[t_cp, t_cp + seconds] per true changepoint (ns), each cut to start where the previous one ends."""
    out = [[int(t), int(t) + int(seconds * NS)] for t in np.asarray(times)[np.asarray(changepoints, dtype=bool)]]
    for a, b in zip(out, out[1:]):
        if a[1] >= b[0]:
            b[0] = a[1]
    return [tuple(w) for w in out]


def score_file(times: np.ndarray, true_cp: np.ndarray, predicted_cp: np.ndarray,
               seconds: float = WINDOW_SECONDS) -> FileResult:
    """One file's windows, detections and false positives (times in ns [rows], flags [rows] bool)."""
    return score_split(times, true_cp, times, predicted_cp, seconds)


def score_split(truth_times, truth, pred_times, pred, seconds: float = WINDOW_SECONDS) -> FileResult:
    """``score_file`` where the labels and the predictions have their own time axes (ns)."""
    pred_times = np.asarray(pred_times, dtype=np.int64)[np.asarray(pred, dtype=bool)]
    positions, outside = [], np.ones(pred_times.size, dtype=bool)
    wins = windows(np.asarray(truth_times, dtype=np.int64), truth, seconds)
    for left, right in wins:
        inside = (pred_times >= left) & (pred_times <= right)
        outside &= ~inside
        if inside.any():        # the first predicted changepoint in the window earns the reward
            positions.append((pred_times[inside].min() - left) / (right - left) if right > left else 0.0)
    return FileResult(len(wins), tuple(positions), len(wins) - len(positions), int(outside.sum()))


def curve(position: float, a_tp: float, a_fp: float) -> float:
    """SKAB's reward for a window's first detection at ``position`` (0 = left edge, 1 = right edge).

    >>> curve(0.0, 1.0, -0.11), curve(1.0, 1.0, -0.11), round(curve(0.5, 1.0, -0.11), 3)
    (1.0, -0.11, 0.444)
    """
    event = min(int(position * DETAIL), DETAIL - 1)
    x = -math.pi / 2 + event * math.pi / (DETAIL - 1)
    return (a_tp - a_fp) / 2 * -math.tanh(x) / math.tanh(math.pi / 2) + (a_tp - a_fp) / 2 + a_fp


def file_score(r: FileResult, profile: Sequence[float]) -> Tuple[float, float, float]:
    """(score, null score, perfect score) of one file under one profile (A_tp, A_fp, A_fn)."""
    a_tp, a_fp, a_fn = profile
    s = a_fp * r.false_positives + a_fn * r.missed + sum(curve(p, a_tp, a_fp) for p in r.positions)
    return s, a_fn * r.windows, a_tp * r.windows


def corpus_scores(results: Sequence[FileResult]) -> Dict[str, float]:
    """SKAB's three normalised scores over files: 100 (S - S_null) / (S_perfect - S_null), 2 decimals."""
    out = {}
    for name, profile in PROFILES.items():
        s, null, perfect = np.sum([file_score(r, profile) for r in results], axis=0) if results else (0, 0, 0)
        out[name] = round(100.0 * (s - null) / (perfect - null), 2) if perfect != null else 0.0
    return out


def summary(per_file: Dict[str, FileResult]) -> dict:
    """The JSON block of ``--task changepoint``: scores, counts and each file's own figures."""
    results = list(per_file.values())
    return {"score": corpus_scores(results), "files": len(results),
            "changepoints": int(sum(r.windows for r in results)),
            "missed": int(sum(r.missed for r in results)),
            "false_positives": int(sum(r.false_positives for r in results)),
            "window_seconds": WINDOW_SECONDS,
            "per_file": {name: {"changepoints": r.windows, "missed": r.missed, "false_positives": r.false_positives,
                                "delay_share": [round(p, 3) for p in r.positions],
                                "score": corpus_scores([r])} for name, r in per_file.items()}}


def changepoint_task(data_dir: str, per_file: dict, alarms: np.ndarray, train_rows: int = 400) -> dict:
    """``--task changepoint``: SKAB's changepoint score of an outlier alarm over the files of an outlier run.

    ``per_file`` is the outlier report's (relative path -> {"test_rows", ...}, in run order) and
    ``alarms`` every file's test-row alarms concatenated in that order: [sum of test rows] bool.
    """
    results, start = {}, 0
    for rel, entry in per_file.items():
        n = entry["test_rows"]
        times, cps = read_changepoints(os.path.join(data_dir, rel))
        results[rel] = score_file(times[train_rows:], cps[train_rows:], alarm_changepoints(alarms[start:start + n]))
        start += n
    if start != len(alarms):
        raise ValueError("alarms cover %d rows, the files' test parts %d" % (len(alarms), start))
    return summary(results)


# --- validation against SKAB's published predictions ------------------------------------------

class _Stub:
    """Stands in for every pandas object in SKAB's pickles: keeps its arguments and state, runs nothing."""
    args: tuple = ()
    state = None

    def __init__(self, *args, **_):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _SafeUnpickler(pickle.Unpickler):
    """Only NumPy's array and dtype reconstructors are real; pandas classes become inert stubs."""
    NUMPY = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
             ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) in self.NUMPY:
            return getattr(__import__(module, fromlist=[name]), name)
        if module.startswith("pandas.") or (module, name) == ("builtins", "slice"):
            return type(name, (_Stub,), {})
        raise pickle.UnpicklingError("SKAB result pickle asks for %s.%s, which is not read" % (module, name))


def _arrays(obj, out: list, seen: set) -> list:
    if id(obj) in seen:
        return out
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, _Stub):
        for part in (obj.args, obj.state, vars(obj)):
            _arrays(part, out, seen)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _arrays(x, out, seen)
    elif isinstance(obj, dict):
        for x in obj.values():
            _arrays(x, out, seen)
    return out


def read_published(path: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    """SKAB's ``results/results-*.pkl``: a list of pandas Series -> [(times ns [n], values [n])]."""
    with open(path, "rb") as fh:
        series = _SafeUnpickler(fh).load()
    out = []
    for s in series:
        arrays = _arrays(s, [], set())
        times = next(a for a in arrays if a.dtype.kind == "M")
        values = next(a for a in arrays if a.dtype.kind in "iufb" and a.shape == times.shape)
        out.append((times.astype("datetime64[ns]").astype(np.int64), np.asarray(values, dtype=np.float64)))
    return out


# (result file, notebook, how its CPs are made from its outliers, published standard/LowFP/LowFN, missed, FPs)
PUBLISHED = [
    ("results-T2-q.pkl", "t2_with_q_SKAB", "diff", (25.35, 14.51, 31.33), 72, 232),
    ("results-Conv_AE.pkl", "Conv_AE", "diff", (23.61, 21.54, 27.55), 82, 23),
    ("results-MSCRED.pkl", "mscred", "diff", (32.42, 16.53, 40.28), 55, 342),
    ("results-Isolation_Forest.pkl", "isolation_forest", "max30", (26.16, 19.5, 30.82), 76, 135),
    ("results-T2.pkl", "t2_SKAB", "diff", (19.54, 10.2, 24.31), 84, 203),
]


def _rolling_max_then_diff(values: np.ndarray, n: int = 30) -> np.ndarray:
    """The isolation-forest notebook's CPs: rolling(n).max().fillna(0).diff().abs(), first = values[0]."""
    m = np.array([values[i - n + 1:i + 1].max() if i >= n - 1 else 0.0 for i in range(values.size)])
    out = np.abs(np.diff(m, prepend=np.nan))
    out[0] = values[0]
    return out == 1


def validate(repo: str, progress=print) -> dict:
    """Re-score SKAB's published predictions with this scorer; each file matched by its test rows' times."""
    data_dir = os.path.join(repo, "data")
    files = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            if name.endswith(".csv") and "anomaly-free" not in root:
                times, cps = read_changepoints(os.path.join(root, name))
                files[os.path.relpath(os.path.join(root, name), data_dir)] = (times[400:], cps[400:])
    out = {}
    for result, notebook, kind, published, missed, fps in PUBLISHED:
        per_file = {}
        for times, values in read_published(os.path.join(repo, "results", result)):
            name, (ftimes, fcps) = _match(files, times)
            if times.size == ftimes.size:
                truth = fcps
            else:               # MSCRED scores a suffix: its notebook takes y_test["changepoint"][-L-1:-1]
                truth_times, truth = ftimes[-times.size - 1:-1], fcps[-times.size - 1:-1]
                ftimes = truth_times
            pred = alarm_changepoints(values == 1) if kind == "diff" else _rolling_max_then_diff(values)
            # windows come from the true CPs' own times, detections from the prediction's times
            per_file[name] = score_split(ftimes, truth, times, pred)
        s = summary(per_file)
        out[notebook] = {"ours": {**s["score"], "missed": s["missed"], "false_positives": s["false_positives"],
                                  "changepoints": s["changepoints"]},
                         "published": dict(zip(PROFILES, published), missed=missed, false_positives=fps)}
        if progress:
            progress("%-18s ours %6.2f %6.2f %6.2f missed %3d FPs %3d of %3d CPs | published %6.2f %6.2f %6.2f "
                     "missed %3d FPs %3d" % ((notebook,) + tuple(s["score"].values()) +
                                             (s["missed"], s["false_positives"], s["changepoints"]) + published +
                                             (missed, fps)))
    return out


def _match(files: dict, times: np.ndarray):
    """The file whose test rows hold every one of ``times`` (overlapping recordings: the shortest fit)."""
    fits = [(f[0].size, name, f) for name, f in files.items()
            if np.isin(times, f[0]).all() and times.size <= f[0].size]
    if not fits:
        raise ValueError("no SKAB file holds a prediction starting %s" % np.datetime64(int(times[0]), "ns"))
    exact = [x for x in fits if x[0] == times.size]
    _, name, f = min(exact or fits)
    return name, f


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validate", required=True, metavar="SKAB_REPO",
                        help="a checkout of waico/SKAB (its data/ and results/ folders)")
    args = parser.parse_args(argv)
    validate(args.validate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
