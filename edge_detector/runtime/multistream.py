"""Many machines, one model: a detector with one state per stream key, scored together.

A gateway that watches 20 pumps of one type runs one model for all of them. ``score_many`` takes
the readings that arrived at the same moment, one per stream, runs stage 1 once over all of them
and stage 2 once over the windows stage 1 flags, and gives each stream the verdict its own
``Detector`` would have given, bit for bit (``Detector.score_states``).

>>> import numpy as np
>>> # multi = MultiDetector(Detector.load("bundle/"))
>>> # multi.score_many([("pump-1", [51.2, 40.3, 62.0, 48.8]), ("pump-2", [50.9, 41.0, 61.7, 49.1])])
"""
from typing import Dict, Hashable, List, Sequence, Tuple

import numpy as np

from .detector import Detector, Score, StreamState


class MultiDetector:
    """One model, one ``StreamState`` per stream key (created at the key's first reading)."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self.states: Dict[Hashable, StreamState] = {}

    def state(self, key: Hashable) -> StreamState:
        if key not in self.states:
            self.states[key] = StreamState(self.detector)
        return self.states[key]

    def reset(self, key: Hashable) -> None:
        """Forget one stream's window: its next reading starts a new warm-up."""
        self.state(key).reset()

    def score_many(self, readings: Sequence[Tuple[Hashable, Sequence[float]]]) -> List[Score]:
        """The verdicts of (stream key, reading [sensors]) pairs, in order.

        Readings of distinct streams are scored together; a stream that appears twice has its
        second reading scored after its first, as a stream must be. InputError for a reading of the
        wrong length or with a value that cannot be scored (no state is touched then).
        """
        checked = [(key, self.detector.check_reading(x)) for key, x in readings]
        out: List[Score] = []
        batch: List[Tuple[Hashable, np.ndarray]] = []
        keys = set()
        for key, x in checked:
            if key in keys:
                out += self._score(batch)
                batch, keys = [], set()
            batch.append((key, x))
            keys.add(key)
        return out + self._score(batch)

    def _score(self, batch: List[Tuple[Hashable, np.ndarray]]) -> List[Score]:
        if not batch:
            return []
        return self.detector.score_states([self.state(k) for k, _ in batch], [x for _, x in batch])

    def score_one(self, key: Hashable, reading: Sequence[float]) -> Score:
        return self.score_many([(key, reading)])[0]
