"""The stream's clock: readings must move forward in time, and one bad timestamp must not blind it.

Rule (one home, used by ``detect``, the device runtime and the MQTT bridge):

- A reading whose time repeats or goes back, or jumps more than ``max_jump`` ahead of the last
  accepted reading, is out of line: it is rejected, and the last accepted time stays. So a single
  reading stamped 2099 (or 1970) costs that reading alone.
- A clock that really moved (an NTP step, a gateway whose clock was reset) shows as readings
  that are out of line with the old time but in line with each other. When ``confirm`` of them
  in a row agree (each 0 < step <= max_jump after the one before), the clock re-anchors on the
  last of them: it is accepted, the window state resets as after a long gap, and a notice says so.
  A real clock change therefore costs ``confirm - 1`` rejected readings and a new warm-up.
- A gap longer than ``gap_factor`` times the median recent interval (but in line) resets the
  window state, so two separate runs are never joined into one window.
"""
import collections
from typing import List, NamedTuple, Optional

import numpy as np

from .errors import InputError

DEFAULT_GAP_FACTOR = 10.0
DEFAULT_MAX_JUMP_S = 86400.0       # one day
CONFIRM = 3


class Tick(NamedTuple):
    """What the clock made of an accepted reading's time."""
    reset: bool                     # the window state must reset before this reading
    notice: Optional[str]           # why, for stderr; None when nothing happened


NO_TICK = Tick(False, None)


class Clock:
    """Checks each reading's time against the last accepted one; see the module's rule."""

    def __init__(self, gap_factor: float = DEFAULT_GAP_FACTOR, max_jump_s: float = DEFAULT_MAX_JUMP_S,
                 confirm: int = CONFIRM):
        self.gap_factor = gap_factor
        self.max_jump_ns = int(max_jump_s * 1e9) if max_jump_s else 0      # 0: no jump is too far
        self.confirm = confirm
        self.last_ns: Optional[int] = None
        self.intervals: collections.deque = collections.deque(maxlen=50)  # recent accepted steps, ns
        self.candidates: List[int] = []   # out-of-line times that agree with each other, oldest first

    def _in_line(self, step: int) -> bool:
        return step > 0 and (not self.max_jump_ns or step <= self.max_jump_ns)

    def check(self, time_ns: Optional[int], timestamp: Optional[str]) -> Tick:
        """Accept a reading's time (returns a Tick) or reject it (InputError naming the reason)."""
        if time_ns is None:
            return NO_TICK
        if self.last_ns is None:
            self.last_ns = time_ns
            return NO_TICK
        step = time_ns - self.last_ns
        if self._in_line(step):
            self.candidates = []
            tick = self._gap(step)
            self.intervals.append(step)
            self.last_ns = time_ns
            return tick
        if self._confirms(time_ns):
            return self._reanchor(time_ns, step)
        raise InputError(self._why(step, timestamp))

    def _gap(self, step: int) -> Tick:
        factor = self.gap_factor
        # the median only when the step could exceed it: the minimum is a free lower bound
        if not factor or len(self.intervals) < 5 or step <= factor * min(self.intervals):
            return NO_TICK
        median = float(np.median(self.intervals))
        if step <= factor * median:
            return NO_TICK
        return Tick(True, "gap of %gs is over %g x the median interval (%gs): window state reset"
                    % (step / 1e9, factor, median / 1e9))

    def _confirms(self, time_ns: int) -> bool:
        # an out-of-line time extends the chain of agreeing candidates, or starts a new one
        if self.candidates and self._in_line(time_ns - self.candidates[-1]):
            self.candidates.append(time_ns)
        else:
            self.candidates = [time_ns]
        return len(self.candidates) >= self.confirm

    def _reanchor(self, time_ns: int, step: int) -> Tick:
        n = len(self.candidates)
        self.candidates = []
        self.intervals.clear()
        self.last_ns = time_ns
        return Tick(True, "the clock moved by %+gs: %d readings in a row agree on the new time, so the stream "
                    "re-anchors on it (the %d before this one were rejected); window state reset"
                    % (step / 1e9, n, n - 1))

    def _why(self, step: int, timestamp: Optional[str]) -> str:
        if step == 0:
            return "timestamp %s repeats the previous reading's" % timestamp
        if step < 0:
            return "timestamp %s goes back %gs before the previous reading's" % (timestamp, -step / 1e9)
        return ("timestamp %s jumps %gs ahead of the previous reading's, more than the %gs a clock may jump "
                "(--max-jump)" % (timestamp, step / 1e9, self.max_jump_ns / 1e9))
