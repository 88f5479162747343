"""Redeliveries: know a message that the MQTT bridge has already handled when it comes again.

QoS 1 is "at least once": after a broker restart (or a dropped connection) the broker sends again
every message it holds unacknowledged, and a publisher that lost its connection sends again what
it was not sure of. Those copies must not be scored twice, nor rejected one by one, nor (three in
a row going back in time) taken for a clock that moved, which would reset the window and score
them all again. The rule, a reading's identity:

- **A reading with a timestamp** is its stream (the topic, for a wildcard), its time and its
  payload's bytes. A message whose time is at or before the latest time already handled on its
  stream, and whose payload is byte for byte the one handled at that time, is a redelivery,
  whether or not the broker marked it. A different payload at an old time is not: it goes to the
  stream's clock, which rejects it with its reason (or re-anchors, for a clock that really moved).
  The last ``window`` messages handled (65,536 over all streams, 20 bytes each) are remembered:
  far more than a broker holds in flight.
- **A message without a timestamp** (or one that does not parse) has no identity of its own: two
  equal payloads can be two readings (a stuck sensor). Then only the broker's own mark counts:
  MQTT sets the DUP flag on a message it sends again, with the same packet id. A DUP message whose
  packet id, topic and payload equal those of the message last handled under that packet id is a
  redelivery. A broker that lost its state (killed before it saved it) and sends old messages
  afresh (new ids, no DUP) cannot be told from new readings: give the readings timestamps.

A redelivery is counted ("duplicates"), acknowledged, and neither scored nor rejected.

>>> seen = Redeliveries()
>>> seen.check("plant/1", 60, b'{"ts": 60}', mid=7, dup=False)
False
>>> seen.check("plant/1", 60, b'{"ts": 60}', mid=9, dup=False)     # the same reading again
True
>>> seen.check("plant/1", None, b'{"a": 1}', mid=8, dup=False)      # no time: a new reading
False
>>> seen.check("plant/1", None, b'{"a": 1}', mid=8, dup=True)       # the broker's own resend
True
"""
import hashlib
from typing import Dict, Optional

import numpy as np

WINDOW = 65536
PACKET_IDS = 65536           # MQTT packet ids are 16 bits
MAX_STREAMS = 4096           # streams whose times are remembered (the bridge keeps at most 1,024 streams)


def digest(topic: str, payload: Optional[bytes], size: int) -> int:
    """64 bits of BLAKE2b over the topic and the payload (its size alone when it was too large to keep); never 0."""
    h = hashlib.blake2b(topic.encode("utf-8", "replace") + b"\0", digest_size=8)
    h.update(payload if payload is not None else b"size:%d" % size)
    return int.from_bytes(h.digest(), "little") | 1


class Redeliveries:
    """What the bridge has handled, to know it again (see the module's rule). Bounded: ``window`` entries of
    stream, time and digest, one digest per packet id, one latest time per stream."""

    def __init__(self, window: int = WINDOW):
        self.times = np.zeros(window, dtype=np.int64)
        self.digests = np.zeros(window, dtype=np.uint64)      # 0: an empty slot
        self.streams = np.zeros(window, dtype=np.int32)
        self.next = 0
        self.stream_ids: Dict[str, int] = {}
        self.latest: Dict[int, int] = {}                      # stream id -> latest time handled, ns
        self.by_packet = np.zeros(PACKET_IDS, dtype=np.uint64)
        self.count = 0

    def check(self, stream: str, time_ns: Optional[int], payload: Optional[bytes], mid: int, dup: bool,
              size: int = 0, topic: str = "") -> bool:
        """True when this message is one already handled (counted in ``count``); False when it is new, and it is
        then remembered as handled."""
        key = digest(topic or stream, payload, size if payload is None else len(payload))
        sid = self.stream_ids.get(stream, -1)
        if sid < 0 and len(self.stream_ids) < MAX_STREAMS:
            sid = self.stream_ids[stream] = len(self.stream_ids)
        if self._seen(sid, time_ns, key, mid, dup):
            self.count += 1
            return True
        self._remember(sid, time_ns, key, mid)
        return False

    def _seen(self, sid: int, time_ns: Optional[int], key: int, mid: int, dup: bool) -> bool:
        if time_ns is not None and sid >= 0:
            latest = self.latest.get(sid)
            if latest is None or time_ns > latest:
                return False                                   # ahead of all handled: new, with no search
            hit = (self.times == time_ns) & (self.streams == sid) & (self.digests == np.uint64(key))
            return bool(hit.any())
        return dup and 0 < mid < PACKET_IDS and int(self.by_packet[mid]) == key

    def _remember(self, sid: int, time_ns: Optional[int], key: int, mid: int) -> None:
        if 0 < mid < PACKET_IDS:
            self.by_packet[mid] = key
        if time_ns is None or sid < 0:
            return
        slot = self.next % len(self.times)
        self.times[slot], self.digests[slot], self.streams[slot] = time_ns, key, sid
        self.next += 1
        self.latest[sid] = max(self.latest.get(sid, time_ns), time_ns)
