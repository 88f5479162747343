"""The alarm's persistence rule: a reading alarms when k of the last n readings were over the threshold.

A real fault on a rig lasts minutes, while a noisy score crosses its threshold for a reading or
two at a time; every such flicker costs an operator a call and, on SKAB's changepoint
leaderboard, a false positive. Asking for k of the last n readings (causal: only past and
present readings) removes isolated crossings, and an alarm then ends only when fewer than k of
the last n are over, so a flickering fault stays one event. k = n = 1 is no rule (the default).
The streaming and batch forms run this same class, reading by reading.
"""
import collections
from typing import NamedTuple

import numpy as np

MAX_PERSISTENCE = 10000


class PersistenceSpec(NamedTuple):
    """The manifest's "persistence" field: {"k": k, "n": n}; bundles without one alarm on every crossing."""
    k: int = 1
    n: int = 1

    @classmethod
    def from_manifest(cls, m: dict) -> "PersistenceSpec":
        d = m.get("persistence") or {}
        spec = cls(int(d.get("k", 1)), int(d.get("n", 1)))
        if not 1 <= spec.k <= spec.n <= MAX_PERSISTENCE:
            raise ValueError("persistence k=%d, n=%d: need 1 <= k <= n <= %d" % (spec.k, spec.n, MAX_PERSISTENCE))
        return spec

    def to_dict(self) -> dict:
        return {"k": self.k, "n": self.n}


class Persistence:
    """One stream's last n crossings; ``update(crossed)`` says whether the reading alarms.

    >>> p = Persistence(PersistenceSpec(2, 3))
    >>> [p.update(c) for c in (True, False, True, True, False, False)]
    [False, False, True, True, True, False]
    """

    def __init__(self, spec: PersistenceSpec):
        self.spec = spec
        self._last: collections.deque = collections.deque(maxlen=spec.n)
        self._over = 0

    def update(self, crossed: bool) -> bool:
        if len(self._last) == self._last.maxlen:
            self._over -= self._last[0]
        self._last.append(bool(crossed))
        self._over += bool(crossed)
        return self._over >= self.spec.k


def persisted(crossed: np.ndarray, spec: PersistenceSpec) -> np.ndarray:
    """The batch form: every reading's crossing, in order, through one fresh ``Persistence``: [n] -> [n] bool.

    >>> persisted(np.array([1, 0, 1, 1, 0, 0], bool), PersistenceSpec(2, 3)).astype(int).tolist()
    [0, 0, 1, 1, 1, 0]
    """
    if spec.n == 1:
        return np.asarray(crossed, dtype=bool)
    rule = Persistence(spec)
    return np.array([rule.update(bool(c)) for c in crossed], dtype=bool)
