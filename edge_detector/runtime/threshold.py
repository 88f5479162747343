"""Stage 2's threshold: fixed, or one that follows normal drift on the device without labels.

``static``: a reading alarms when its stage-2 score is over ``tau2`` (the manifest's).

``adaptive``: the threshold follows the scores the stream itself calls normal,

    tau_t = margin * max(tau2, quantile_q(the last ``history`` stage-2 scores that did not alarm))

so a machine whose normal operation drifts after training (a warming pump, a slowly loading
server) raises its own threshold instead of alarming for hours, and a calm one keeps the
trained one. The quantile is frozen while an alarm lasts (an alarming score never enters the
history), so a sustained fault is never learned as normal. The history starts as the
calibration windows' scores, recorded in the manifest, so every engine and every start of the
same bundle begins from the same state; batch and streaming forms run this same code.
"""
import bisect
import collections
import math
from typing import List, NamedTuple, Sequence

import numpy as np

from .errors import check_choice

KINDS = ("static", "adaptive")


class ThresholdSpec(NamedTuple):
    """The manifest's "threshold" field (bundles without one are static)."""
    kind: str = "static"
    quantile: float = 0.95          # of the recent scores that did not alarm
    history: int = 200              # how many of them
    margin: float = 1.0             # tau_t = margin * max(tau2, quantile)
    initial: tuple = ()             # the calibration scores the history starts from (oldest first)

    @classmethod
    def from_manifest(cls, m: dict) -> "ThresholdSpec":
        d = m.get("threshold") or {}
        kind = str(d.get("kind", "static"))
        check_choice("threshold.kind", kind, KINDS)
        return cls(kind=kind, quantile=float(d.get("quantile", 0.95)), history=int(d.get("history", 200)),
                   margin=float(d.get("margin", 1.0)), initial=tuple(float(v) for v in d.get("initial", ())))

    def to_dict(self) -> dict:
        if self.kind == "static":
            return {"kind": "static"}
        return {"kind": self.kind, "quantile": self.quantile, "history": self.history, "margin": self.margin,
                "initial": list(self.initial)}


def quantile_sorted(values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted ``values`` with linear interpolation (NumPy's default method).

    >>> quantile_sorted([1.0, 2.0, 3.0, 4.0], 0.5), quantile_sorted([5.0], 0.9)
    (2.5, 5.0)
    """
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (pos - lo) * (values[hi] - values[lo])


class Threshold:
    """The stage-2 threshold of one stream: ``exceeded(s2)`` decides and, when adaptive, learns.

    >>> t = Threshold(ThresholdSpec("adaptive", 0.5, 3, 1.5, (1.0, 1.2, 1.4)), tau2=1.0)
    >>> round(t.value, 2), t.exceeded(1.7), round(t.value, 2), t.exceeded(5.0), round(t.value, 2)
    (1.8, False, 2.1, True, 2.1)
    """

    def __init__(self, spec: ThresholdSpec, tau2: float):
        self.spec, self.tau2 = spec, tau2
        self.adaptive = spec.kind == "adaptive"
        self._recent: collections.deque = collections.deque(maxlen=max(spec.history, 1))   # arrival order
        self._sorted: List[float] = []                                                     # the same, sorted
        for v in spec.initial[-spec.history:]:
            self._accept(v)

    @property
    def value(self) -> float:
        """The threshold the next score is compared with."""
        if not self.adaptive:
            return self.tau2
        base = quantile_sorted(self._sorted, self.spec.quantile) if self._sorted else self.tau2
        return self.spec.margin * max(self.tau2, base)

    def _accept(self, score: float) -> None:
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(score)
        bisect.insort(self._sorted, score)

    def state(self) -> dict:
        """What it learnt: ``{"recent": [history] float64}``, the scores that did not alarm, oldest first (the
        whole of an adaptive threshold's state; a static one learns nothing: ``{}``).

        >>> t = Threshold(ThresholdSpec("adaptive", 0.5, 3, 1.0, (1.0, 2.0)), tau2=1.0)
        >>> u = Threshold(t.spec, tau2=1.0); _ = t.exceeded(1.5); u.restore(t.state()); u.value == t.value
        True
        """
        if not self.adaptive:
            return {}
        return {"recent": np.array(self._recent, dtype=np.float64)}

    def restore(self, state: dict) -> None:
        """Take back ``state()``'s dict; ValueError naming the rule when it cannot be this threshold's (then the
        threshold is unchanged): more scores than its history holds, or a score that is not finite."""
        if not self.adaptive:
            if state:
                raise ValueError("threshold state given to a static threshold")
            return
        recent = state.get("recent") if isinstance(state, dict) else None
        try:
            values = [float(v) for v in np.asarray(recent, dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError):
            raise ValueError("threshold state: 'recent' is not a list of numbers") from None
        if len(values) > self._recent.maxlen:
            raise ValueError("threshold state holds %d scores, more than the history of %d"
                             % (len(values), self._recent.maxlen))
        if not all(math.isfinite(v) for v in values):
            raise ValueError("threshold state holds a score that is not finite")
        self._recent.clear()
        self._sorted = []
        for v in values:
            self._accept(v)

    def exceeded(self, score: float) -> bool:
        """Whether ``score`` alarms; a score that does not enters the adaptive history."""
        alarm = score > self.value
        if self.adaptive and not alarm:
            self._accept(score)
        return alarm
