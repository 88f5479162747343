"""The NAB scorer, written here from the NAB paper and documentation (Lavin & Ahmad 2015; Ahmad et al. 2017).

For one file, given its detections (anomaly score >= threshold) and its labelled windows:

- the first ``probationary_length`` rows (15% of the file, at most 750) are not scored;
- a window with detections earns the best of them: ``scaled_sigmoid(position)``, where the
  position runs from -1 at the window's left edge to 0 at its right edge, so the earliest
  detection earns the most (tpWeight at the left edge); an undetected window costs fnWeight;
- a detection outside every window costs fpWeight times the scaled sigmoid of its distance past
  the preceding window's right edge (in window widths, so a detection just after a window costs
  little), or fpWeight in full before the first window;
- the file's raw score is the sum; a corpus's is the sum over files, normalised as
  ``100 (S - S_null) / (S_perfect - S_null)``, where S_null is the score of no detection at all
  and S_perfect is tpWeight times the number of windows.

``benchmarks/nab.py --validate NAB_REPO`` reproduces a published detector's per-file raw scores
and counts from its raw result files with this code (figures in benchmarks/README.md).
"""
import datetime as dt
import json
import math
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

PROFILES = {
    "standard": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fpWeight": 0.22, "fnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 2.0},
}
PROBATIONARY_PERCENT = 0.15


class FileScore(NamedTuple):
    raw: float             # the file's NAB score under one profile, before normalisation
    tp: int                # detected rows inside windows (past the probationary rows)
    tn: int
    fp: int
    fn: int
    windows: int           # windows scored (those with a row past the probationary part)
    null: float            # the same file's score with no detection


def scaled_sigmoid(position: float) -> float:
    """2 sigmoid(-5 x) - 1: 0.987 at the window's left edge (-1), 0 at its right edge, -1 far past it.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(4.0)
    (0.98661, 0.0, -1.0)
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(n: int, percent: float = PROBATIONARY_PERCENT) -> float:
    """Rows not scored at the start of a file of ``n`` rows: 15% of it, at most 750."""
    return min(math.floor(percent * n), percent * 5000)


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.strip())


def window_rows(timestamps: Sequence[dt.datetime], windows: Sequence[Sequence[str]]) -> List[Tuple[int, int]]:
    """Labelled windows [start, end] (timestamps, inclusive) as row indices; each edge must be a row's time."""
    index = {t: i for i, t in enumerate(timestamps)}
    rows = []
    for start, end in windows:
        a, b = parse_time(start), parse_time(end)
        if a not in index or b not in index:
            raise ValueError("window %s..%s does not start and end on rows of the file" % (start, end))
        rows.append((index[a], index[b]))
    return sorted(rows)


def row_rewards(n: int, windows: Sequence[Tuple[int, int]], profile: dict) -> Tuple[np.ndarray, np.ndarray]:
    """What a detection at each row would earn, and the window it falls in (-1: none): [n], [n]."""
    reward = np.empty(n)
    window_of = np.full(n, -1)
    max_tp = scaled_sigmoid(-1.0)
    previous = None                       # (right edge, width) of the last window passed
    k = 0
    i = 0
    while i < n:
        if k < len(windows) and i == windows[k][0]:
            left, right = windows[k]
            width = float(right - left + 1)
            for j in range(left, right + 1):
                reward[j] = scaled_sigmoid(-(right - j + 1) / width) * profile["tpWeight"] / max_tp
                window_of[j] = k
            previous = (right, width)
            k += 1
            i = right + 1
            continue
        if previous is None:
            reward[i] = -1.0 * profile["fpWeight"]
        else:
            reward[i] = scaled_sigmoid(abs(previous[0] - i) / (previous[1] - 1)) * profile["fpWeight"]
        i += 1
    return reward, window_of


class FileScorer:
    """One file's NAB scorer under one profile, its per-row rewards computed once: ``score(detections)``."""

    def __init__(self, windows: Sequence[Tuple[int, int]], n: int, profile: dict):
        self.profile = profile
        self.reward, self.window_of = row_rewards(n, windows, profile)
        self.scored = np.arange(n) >= probationary_length(n)
        self.in_window = self.window_of >= 0
        self.live = sorted({int(w) for w in self.window_of[self.scored & self.in_window]})
        self._outside = self.scored & ~self.in_window

    def score(self, detections: np.ndarray) -> FileScore:
        detections = np.asarray(detections, dtype=bool)
        hits = detections & self.scored
        raw = float(np.sum(self.reward[hits & ~self.in_window]))
        for w in self.live:
            hit = hits & (self.window_of == w)
            raw += float(self.reward[hit].max()) if hit.any() else -self.profile["fnWeight"]
        tp = int(np.sum(hits & self.in_window))
        fp = int(np.sum(hits & ~self.in_window))
        fn = int(np.sum(~detections & self.scored & self.in_window))
        tn = int(np.sum(~detections & self._outside))
        return FileScore(raw, tp, tn, fp, fn, len(self.live), -self.profile["fnWeight"] * len(self.live))


def score_file(detections: np.ndarray, windows: Sequence[Tuple[int, int]], profile: dict) -> FileScore:
    """One file's NAB score: detections [n] bool (score >= threshold), windows as row index pairs."""
    detections = np.asarray(detections, dtype=bool)
    return FileScorer(windows, detections.size, profile).score(detections)


def normalised(scores: Sequence[FileScore], windows_total: int, profile: dict) -> float:
    """100 (S - S_null) / (S_perfect - S_null) over files: S_perfect = tpWeight x every labelled window."""
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = profile["tpWeight"] * windows_total
    return 100.0 * (raw - null) / (perfect - null)


def load_windows(labels_path: str) -> Dict[str, list]:
    with open(labels_path) as fh:
        return json.load(fh)
