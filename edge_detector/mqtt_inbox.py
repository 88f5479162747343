"""The MQTT bridge's inbox: received messages between the network thread and the scorer, bounded in bytes.

Back-pressure, not loss. The inbox holds at most ``max_messages`` messages and ``max_bytes`` bytes
(each message costs its payload plus ``OVERHEAD`` for the objects around it). When it is full,
``put`` (called on paho's network thread from ``on_message``) waits for the scorer to take one:
the network thread stops reading the socket, the broker stops getting acknowledgements, and the
rest of a burst waits at the broker (in its in-flight window for this client, then its queue;
see ``edge_detector.mqtt``). Nothing is dropped from a full inbox. ``close`` (at a stop) wakes a
waiting ``put``, which gives its message up unacknowledged: with a persistent session the broker
hands it back at the next start.

>>> class M: payload, mid, qos, topic, dup = b'{"a": 1}', 1, 1, "t", False
>>> inbox = Inbox(max_messages=2, max_bytes=100_000, max_payload=1_000)
>>> inbox.put(M(), generation=1)
True
>>> inbox.get(timeout=0.1).payload, inbox.held_bytes
(b'{"a": 1}', 0)
"""
import collections
import threading
import time
from typing import NamedTuple, Optional

from edge_detector.runtime.readings import MAX_LINE_BYTES

MAX_MESSAGES = 10000
MAX_BYTES = 32 * 2**20          # 32 MiB: the unit's MemoryMax is 256M, the bridge itself about 50 MiB
OVERHEAD = 512                  # bytes a held message costs beyond its payload (tuple, bytes and str headers, topic)


class Received(NamedTuple):
    """A message as the scorer gets it: its packet id and QoS (to acknowledge it), its payload (None when it was
    too large to keep), its size, its topic, whether the broker marked it as sent again (MQTT's DUP flag), and the
    connection it came on (``generation``: acknowledgements go only on that connection)."""
    mid: int
    qos: int
    payload: Optional[bytes]
    size: int
    topic: str = ""
    dup: bool = False
    generation: int = 0


class Inbox:
    """A FIFO of ``Received`` bounded in messages and bytes whose ``put`` waits while it is full (see the module)."""

    def __init__(self, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES,
                 max_payload: int = MAX_LINE_BYTES):
        if max_bytes < max_payload + OVERHEAD:
            raise ValueError("the inbox's byte budget (%d) must hold at least one message of the %d-byte payload "
                             "limit" % (max_bytes, max_payload))
        self.max_messages, self.max_bytes, self.max_payload = max_messages, max_bytes, max_payload
        self.items: collections.deque = collections.deque()
        self.held_bytes = self.peak_bytes = self.peak_messages = 0
        self.waits = 0                     # times a put found the inbox full and waited (back-pressure applied)
        self.given_up = 0                  # puts that gave their message up because the inbox was closed
        self.closed = False
        self.cond = threading.Condition()

    @staticmethod
    def cost(item: Received) -> int:
        return OVERHEAD + (len(item.payload) if item.payload is not None else 0)

    def _full(self, cost: int) -> bool:
        return len(self.items) >= self.max_messages or self.held_bytes + cost > self.max_bytes

    def put(self, message, generation: int = 0) -> bool:
        """Network thread: keep the message (its payload only when at most ``max_payload`` bytes), waiting while the
        inbox is full. False when the inbox was closed first (the message is left unacknowledged)."""
        size = len(message.payload)
        item = Received(message.mid, message.qos, message.payload if size <= self.max_payload else None, size,
                        getattr(message, "topic", ""), bool(getattr(message, "dup", False)), generation)
        cost = self.cost(item)
        with self.cond:
            if self._full(cost) and not self.closed:
                self.waits += 1
                while self._full(cost) and not self.closed:
                    self.cond.wait(0.5)
            if self.closed:
                self.given_up += 1
                return False
            self.items.append(item)
            self.held_bytes += cost
            self.peak_bytes = max(self.peak_bytes, self.held_bytes)
            self.peak_messages = max(self.peak_messages, len(self.items))
            self.cond.notify_all()
        return True

    def get(self, timeout: Optional[float] = None) -> Optional[Received]:
        """Scorer: the oldest message, or None when none came within ``timeout`` seconds (0: do not wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left)
            item = self.items.popleft()
            self.held_bytes -= self.cost(item)
            self.cond.notify_all()
            return item

    def __len__(self) -> int:
        return len(self.items)

    def close(self) -> None:
        """At a stop: a ``put`` waiting (or to come) gives its message up instead of waiting for room."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
