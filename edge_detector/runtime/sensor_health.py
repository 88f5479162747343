"""Sensor health: a sensor that stops reporting (dead), freezes (stuck, flat-lined), or leaves the value it held
through all of training, reported by name instead of being filled or scored as if nothing happened.

    reading [sensors] (NaN = missing) -> SensorHealth.observe -> [HealthNote]  (the stream turns them into notices)
      missing for more than ``max_fill`` readings in a row  -> "dead"      (readings without it are then rejected)
      a value again after that                              -> "alive"
      the same value for ``stuck_after`` readings in a row  -> "stuck"     (only a sensor that moved in training)
      a different value after that                          -> "moving"
      a value off the constant it held in all of training   -> "departed"  (stage 1 cannot see such a sensor)
      its constant again                                    -> "returned"

What training saw of each sensor is the manifest's ``sensor_profile`` (``profile_of`` writes it at train time):
its lowest and highest value, and its longest run of one unchanged value, so a sensor that legitimately holds a
value for a while (a valve, a slow thermocouple) is not called stuck before it held one twice as long as it ever
did in training. ``unchanged_runs`` is the batch form of the run that ``observe`` counts reading by reading.
NumPy and the standard library only.
"""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

DEFAULT_MAX_FILL = 60           # consecutive readings one sensor may be filled (hold-last, interpolate)
STUCK_WARMUPS = 3               # default stuck_after: this many warm-ups (about the window) ...
MIN_STUCK_AFTER = 30            # ... and at least this many readings, and twice training's longest run
CONSTANT_RTOL = 1e-9            # a sensor whose training range is within this (relative) is constant
DEPARTURE_RTOL = 1e-6           # a value further than this (relative) from that constant departs from it


class HealthNote(NamedTuple):
    sensor: int                 # its index in the bundle's sensors
    kind: str                   # dead | alive | stuck | moving | departed | returned
    text: str


def unchanged_runs(values: np.ndarray) -> np.ndarray:
    """[time, sensors] -> [time, sensors] int: how many readings in a row, ending at each, a sensor has held its
    value (1 where it just changed). The batch form of what ``SensorHealth.observe`` counts on complete readings.

    >>> unchanged_runs(np.array([[1.0], [1.0], [2.0], [2.0], [2.0]]))[:, 0].tolist()
    [1, 2, 1, 2, 3]
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        return np.zeros(values.shape, dtype=np.int64)
    changed = np.ones(values.shape, dtype=bool)
    changed[1:] = values[1:] != values[:-1]                                    # [time, sensors]
    rows = np.arange(n)[:, None]
    start = np.maximum.accumulate(np.where(changed, rows, 0), axis=0)          # the row each run began
    return (rows - start + 1).astype(np.int64)


def profile_of(values: np.ndarray) -> dict:
    """The manifest's ``sensor_profile`` of training readings [time, sensors]: low, high (per sensor) and max_run,
    the longest run of one unchanged value."""
    values = np.asarray(values, dtype=np.float64)
    runs = unchanged_runs(values)
    return {"low": values.min(axis=0).tolist(), "high": values.max(axis=0).tolist(),
            "max_run": runs.max(axis=0).astype(int).tolist()}


def constant_mask(profile: Optional[dict], n_sensors: int) -> np.ndarray:
    """[sensors] bool: the sensors that held one value through all of training (none without a profile)."""
    if not profile:
        return np.zeros(n_sensors, dtype=bool)
    low, high = np.asarray(profile["low"], dtype=np.float64), np.asarray(profile["high"], dtype=np.float64)
    return (high - low) <= CONSTANT_RTOL * np.maximum(1.0, np.abs(low))


def default_stuck_after(warmup: int, profile: Optional[dict] = None) -> int:
    """Readings of one unchanged value before a sensor is called stuck: 3 warm-ups, at least 30, and more than twice
    the longest unchanged run training saw of any sensor.

    >>> default_stuck_after(20), default_stuck_after(20, {"max_run": [5, 40]})
    (60, 81)
    """
    longest = max(profile["max_run"]) if profile and profile.get("max_run") else 0
    return max(STUCK_WARMUPS * warmup, MIN_STUCK_AFTER, 2 * int(longest) + 1)


class SensorHealth:
    """One stream's sensor health, reading by reading (see the module docstring).

    ``max_fill``: readings in a row one sensor may miss before it is dead (0: no limit). ``stuck_after``: readings of
    one unchanged value before it is stuck (0: never). ``profile``: the manifest's ``sensor_profile`` (or None).

    >>> h = SensorHealth(["a", "b"], max_fill=2, stuck_after=3)
    >>> [n.kind for x in ([1.0, 5.0], [np.nan, 6.0], [np.nan, 7.0], [np.nan, 8.0], [2.0, 9.0]) for n in h.observe(x)]
    ['dead', 'alive']
    >>> [n.text[:19] for x in ([3.0, 1.0], [4.0, 1.0], [5.0, 1.0]) for n in h.observe(x)]
    ["sensor 'b' is stuck"]
    """

    def __init__(self, sensors: Sequence[str], max_fill: int = DEFAULT_MAX_FILL, stuck_after: int = 0,
                 profile: Optional[dict] = None):
        n = len(sensors)
        self.sensors, self.max_fill, self.stuck_after = list(sensors), int(max_fill), int(stuck_after)
        self.missing_run = np.zeros(n, dtype=np.int64)     # readings in a row without a value
        self.same_run = np.zeros(n, dtype=np.int64)        # readings in a row with one value (missing ones skipped)
        self.last = np.full(n, np.nan)                     # the last value each sensor reported
        self.dead = np.zeros(n, dtype=bool)
        self.stuck = np.zeros(n, dtype=bool)
        self.departed = np.zeros(n, dtype=bool)
        self.train(profile)

    def train(self, profile: Optional[dict]) -> None:
        """Take what training saw of the sensors (a new bundle's ``sensor_profile``)."""
        self.constant = constant_mask(profile, len(self.sensors))
        self.constant_value = np.asarray(profile["low"], dtype=np.float64) if profile else np.zeros(len(self.sensors))
        self.tolerance = DEPARTURE_RTOL * np.maximum(1.0, np.abs(self.constant_value))

    def observe(self, values: np.ndarray) -> List[HealthNote]:
        """Count one reading [sensors] (NaN = missing); the notes of what changed with it (usually none)."""
        present = ~np.isnan(values)
        same = present & (values == self.last)
        self.missing_run = np.where(present, 0, self.missing_run + 1)
        self.same_run = np.where(present, np.where(same, self.same_run + 1, 1), self.same_run)
        self.last = np.where(present, values, self.last)
        off = self.constant & present & (np.abs(values - self.constant_value) > self.tolerance)
        flags = (self.missing_run > self.max_fill) if self.max_fill > 0 else np.zeros_like(present)
        stuck = ~self.constant & (self.same_run >= self.stuck_after) if self.stuck_after > 0 else np.zeros_like(present)
        departed = np.where(present, off, self.departed)
        if (flags == self.dead).all() and (stuck == self.stuck).all() and (departed == self.departed).all():
            return []                                      # the usual case: nothing changed
        notes = self._changes(flags, stuck, departed, values)
        self.dead, self.stuck, self.departed = flags, stuck, departed
        return notes

    def _changes(self, dead: np.ndarray, stuck: np.ndarray, departed: np.ndarray, values: np.ndarray):
        notes = []
        for k in np.flatnonzero(dead & ~self.dead):
            notes.append(HealthNote(k, "dead", "sensor %r is dead: no value for %d readings in a row, over the limit "
                                    "of %d filled; readings without it are rejected until it reports again"
                                    % (self.sensors[k], self.missing_run[k], self.max_fill)))
        for k in np.flatnonzero(~dead & self.dead):
            notes.append(HealthNote(k, "alive", "sensor %r reports again (%g)" % (self.sensors[k], values[k])))
        for k in np.flatnonzero(stuck & ~self.stuck):
            notes.append(HealthNote(k, "stuck", "sensor %r is stuck: the same value (%g) for %d readings in a row, "
                                    "over the limit of %d" % (self.sensors[k], self.last[k], self.same_run[k],
                                                              self.stuck_after)))
        for k in np.flatnonzero(~stuck & self.stuck):
            notes.append(HealthNote(k, "moving", "sensor %r moves again (%g)" % (self.sensors[k], self.last[k])))
        for k in np.flatnonzero(departed & ~self.departed):
            notes.append(HealthNote(k, "departed", "sensor %r reads %g, but it was constant (%g) in all of training: "
                                    "the model cannot see it move" % (self.sensors[k], values[k],
                                                                      self.constant_value[k])))
        for k in np.flatnonzero(~departed & self.departed):
            notes.append(HealthNote(k, "returned", "sensor %r is back at its training constant (%g)"
                                    % (self.sensors[k], self.constant_value[k])))
        return notes

    def dead_among(self, missing: np.ndarray) -> List[int]:
        """Indices of the missing sensors [sensors] bool that are dead."""
        return np.flatnonzero(missing & self.dead).tolist()
