"""Sensor data for training: the synthetic generator and the one CSV loader.

The loader is a thin layer over the runtime's own CSV parser (``runtime.readings``), so
training and the device read a file the same way.
"""
import csv
import datetime as dt
import hashlib
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edge_detector.export.files import atomic_file
from edge_detector.runtime import InputError, Layout, Reading, Rejected
from edge_detector.runtime.errors import check_choice
from edge_detector.runtime.readings import ignored_notice, open_csv

ANOMALY_KINDS = ("spike", "drop", "contextual", "collective")
MINUTES_PER_DAY = 1440


class SignalParams(NamedTuple):
    """The normal part of the synthetic signal, one value per sensor.

    A reading is ``base + trend * t + amplitude * sin(2 pi t / 1440) + noise * N(0, 1)``: every
    sensor shares the daily cycle's phase. Kept so that analyses (benchmarks/contextual_ceiling.py)
    can compare a detector with one that knows the generating model.
    """
    base: np.ndarray
    trend: np.ndarray
    amplitude: np.ndarray
    noise: np.ndarray                  # the Gaussian noise's standard deviation

    def expected(self, t: np.ndarray) -> np.ndarray:
        """The noise-free normal signal: [time] minute indices -> [time, sensors]."""
        return (self.base + self.trend * t[:, None]
                + self.amplitude * np.sin(2 * np.pi * t[:, None] / MINUTES_PER_DAY))


class Dataset(NamedTuple):
    values: np.ndarray                 # [time, sensors] float64
    sensors: List[str]
    timestamps: Optional[List[str]]
    labels: Optional[np.ndarray]       # [time] bool, or None when the file has no label column
    kinds: Optional[List[str]]         # anomaly_type per reading ('' for normal), when present
    signal: Optional[SignalParams] = None   # synthetic data only: how the normal part was drawn

    @property
    def sha256(self) -> str:
        """Hash of the sensor values (float64, little-endian, row-major) and their names."""
        digest = hashlib.sha256(",".join(self.sensors).encode())
        digest.update(np.ascontiguousarray(self.values, dtype="<f8").tobytes())
        return digest.hexdigest()


def generate(n: int = 10_000, seed: int = 42, n_sensors: int = 4) -> Dataset:
    """The seed project's synthetic IoT data: 4 sensors with trend, daily cycle and noise.

    Anomalies (counts scale with n; 10,000 readings give 40 spikes, 40 drops, 3 contextual
    and 2 collective windows) never overlap each other and keep 100 readings from both ends.

    >>> d = generate(n=2000, seed=1)
    >>> d.values.shape, sorted(set(d.kinds) - {''})
    ((2000, 4), ['collective', 'contextual', 'drop', 'spike'])
    """
    if n < 1000:
        raise ValueError("n must be at least 1000 to fit the anomalies away from the ends, got %d" % n)
    if n_sensors != 4:
        raise ValueError("the synthetic layout has exactly 4 sensors, got %d" % n_sensors)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    signal = SignalParams(base=rng.uniform(30, 70, n_sensors), trend=rng.uniform(-0.002, 0.002, n_sensors),
                          amplitude=rng.uniform(5, 15, n_sensors), noise=rng.uniform(1, 3, n_sensors))
    values = signal.expected(t) + rng.normal(0.0, 1.0, (n, n_sensors)) * signal.noise

    kinds = np.array([""] * n, dtype=object)
    scale = n / 10_000

    def place(length: int) -> int:
        # a start whose whole run is free and at least 100 readings from both ends
        for _ in range(10_000):
            start = int(rng.integers(100, n - 100 - length + 1))
            if not kinds[start:start + length].any():
                return start
        raise ValueError("could not place an anomaly of length %d in %d readings" % (length, n))

    for _ in range(max(1, round(3 * scale))):            # sensor 3: contextual reflections
        s = place(50)
        w = values[s:s + 50, 2]
        values[s:s + 50, 2] = 2 * w.mean() - w
        kinds[s:s + 50] = "contextual"
    for _ in range(max(1, round(2 * scale))):            # sensor 4: collective drifts
        s = place(100)
        values[s:s + 100, 3] += np.linspace(0.0, rng.uniform(10, 30), 100)
        kinds[s:s + 100] = "collective"
    for _ in range(max(1, round(40 * scale))):           # sensor 1: spikes
        s = place(1)
        values[s, 0] *= rng.uniform(2, 4)
        kinds[s] = "spike"
    for _ in range(max(1, round(40 * scale))):           # sensor 2: drops
        s = place(1)
        values[s, 1] *= rng.uniform(0.2, 0.5)
        kinds[s] = "drop"

    start = dt.datetime(2024, 1, 1)
    timestamps = [(start + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]
    sensors = ["sensor_%d" % (i + 1) for i in range(n_sensors)]
    return Dataset(values, sensors, timestamps, kinds != "", list(kinds), signal)


# The seed notebook's experiment: 3 sensors (temperature, pressure, vibration), each a daily cycle plus
# noise of its own size; 50 readings where all three shift together by the same +5 or -5.
NOTEBOOK_SENSORS = ("temperature", "pressure", "vibration")


def generate_notebook(n: int = 5_000, seed: int = 42, spikes: int = 50, shift: float = 5.0) -> Dataset:
    """The seed notebook's data set: 3 sensors, ``spikes`` readings shifted by the same +-``shift`` on every sensor.

    Normal readings: temperature 20 + 2 sin(2 pi t / 1440) + N(0, 0.5); pressure 100 + 3 sin(...)
    + N(0, 1); vibration 1 + 0.2 sin(...) + N(0, 0.25), one reading a minute. Each anomaly adds the
    same +shift or -shift (a fair coin) to all three sensors at one reading, 100 readings or more
    from both ends, never two at the same reading. Labels: ``is_anomaly``; kind "spike".

    >>> d = generate_notebook(seed=1)
    >>> d.values.shape, int(d.labels.sum()), d.sensors
    ((5000, 3), 50, ['temperature', 'pressure', 'vibration'])
    """
    if n < 1000 or spikes > (n - 200) // 2:
        raise ValueError("n must be at least 1000 and hold the %d spikes away from the ends, got %d" % (spikes, n))
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    daily = np.sin(2 * np.pi * t / MINUTES_PER_DAY)[:, None]                          # [time, 1]
    base, amplitude, noise = np.array([20.0, 100.0, 1.0]), np.array([2.0, 3.0, 0.2]), np.array([0.5, 1.0, 0.25])
    values = base + amplitude * daily + rng.normal(0.0, 1.0, (n, 3)) * noise         # [time, 3]
    at = np.sort(rng.choice(np.arange(100, n - 100), size=spikes, replace=False))
    values[at] += rng.choice([-shift, shift], size=spikes)[:, None]
    labels = np.zeros(n, dtype=bool)
    labels[at] = True
    start = dt.datetime(2024, 1, 1)
    timestamps = [(start + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]
    return Dataset(values, list(NOTEBOOK_SENSORS), timestamps, labels, ["spike" if x else "" for x in labels])


# `generate --profile`: the name of each synthetic data set, its generator and its default length
PROFILES = {"sensors": (generate, 10_000), "notebook": (generate_notebook, 5_000)}


def write_csv(data: Dataset, path: str) -> None:
    """Write a dataset in the layout ``generate`` uses (LF line endings, 6 decimals), atomically."""
    with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        header = (["timestamp"] if data.timestamps else []) + list(data.sensors)
        header += (["is_anomaly"] if data.labels is not None else []) + (["anomaly_type"] if data.kinds else [])
        w.writerow(header)
        for i in range(data.values.shape[0]):
            row = [data.timestamps[i]] if data.timestamps else []
            row += ["%.6f" % v for v in data.values[i]]
            row += [int(data.labels[i])] if data.labels is not None else []
            row += [data.kinds[i]] if data.kinds else []
            w.writerow(row)


def read_csv(path: str, sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None) -> Tuple[Layout, List[Reading]]:
    """Every reading of a CSV file: (layout, readings); InputError naming the first line that is not a
    complete, valid reading (training wants clean data)."""
    if not os.path.isfile(path):
        raise InputError("%s: no such file" % path)
    readings = []
    # newline="" keeps each line's own ending, so CRLF and LF files read alike
    with open(path, "r", encoding="utf-8", newline="") as fh:
        try:
            layout, rows = open_csv(fh, sensors, label_col, timestamp_col)
        except InputError as exc:
            raise InputError("%s: %s" % (path, exc)) from None
        for item in rows:
            if isinstance(item, Rejected):
                raise InputError("%s line %d: %s" % (path, item.line, item.reason))
            missing = np.flatnonzero(np.isnan(item.values))
            if missing.size:
                raise InputError("%s line %d: missing value in %s"
                                 % (path, item.line, ", ".join(layout.sensor_names[k] for k in missing)))
            readings.append(item)
    return layout, readings


def header_notice(path: str, sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
                  timestamp_col: Optional[str] = None) -> str:
    """What ``detect`` says of this CSV's header (its columns that are not scored; '' for none), from the header
    line alone."""
    with open(path, "r", encoding="utf-8", newline="") as fh:
        layout, _ = open_csv(fh, sensors, label_col, timestamp_col)
    return ignored_notice(layout)


def load_csv(path: str, sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None) -> Dataset:
    """Load any supported CSV: synthetic, SKAB (';', 'datetime', float labels), NAB, or your own.

    The delimiter (',' or ';') is detected; CRLF and LF both work; the timestamp column is
    optional; ``sensors`` picks and orders sensor columns by name; ``label_col`` names the
    label (default: 'is_anomaly', 'anomaly' or 'label' when present).
    """
    layout, readings = read_csv(path, sensors=sensors, label_col=label_col, timestamp_col=timestamp_col)
    if not readings:
        raise InputError("%s: no data rows" % path)
    values = np.stack([r.values for r in readings])
    timestamps = [r.timestamp for r in readings] if layout.timestamp_index is not None else None
    labels = None
    if layout.label_index is not None:
        labels = np.array([bool(r.label) for r in readings])
    kinds = None
    if "anomaly_type" in layout.header:
        col = layout.header.index("anomaly_type")
        with open(path, "r", encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter=layout.delimiter))[1:]
        kinds = [row[col] if len(row) > col else "" for row in rows if row]
        if len(kinds) != len(readings):
            kinds = None
    return Dataset(values, layout.sensor_names, timestamps, labels, kinds)


def generate_csv(path: str, n: Optional[int] = None, seed: int = 42, profile: str = "sensors") -> Dataset:
    """The ``profile``'s data set (``PROFILES``; ``n`` readings, default the profile's) written to ``path`` with
    ``write_csv``; returns the dataset."""
    check_choice("profile", profile, tuple(PROFILES))
    make, default_n = PROFILES[profile]
    data = make(n=default_n if n is None else n, seed=seed)
    write_csv(data, path)
    return data
