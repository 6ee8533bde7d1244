"""The bounded in-memory buffer between MQTT intake and InfluxDB writes.

It holds deliveries (one MQTT message each) in arrival order, counted in readings
(`Delivery.weight`). Intake
waits when it is full: the network thread stops reading, TCP pushes back, and the broker
keeps what we have not taken. Nothing in it is acknowledged yet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from contracts.message import Reading


@dataclass
class Delivery:
    """One MQTT message: its packet id on connection number `connection`, and its readings.

    A message with no valid reading still passes through (its dead letter is written), so
    that it is acknowledged in order with the others.
    """

    mid: int
    qos: int
    connection: int
    topic: str
    readings: list[Reading]
    arrived: float = field(default_factory=time.monotonic)

    @property
    def weight(self) -> int:
        """Its room in the buffer: a message of only dead letters still takes a place."""
        return max(1, len(self.readings))


class DeliveryBuffer:
    def __init__(self, max_readings: int, batch_size: int) -> None:
        self.max_readings = max_readings
        self.batch_size = batch_size
        self.depth = 0
        self._last_arrival = 0.0
        self._items: deque[Delivery] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, delivery: Delivery, stop: threading.Event, poll_s: float = 0.5) -> bool:
        """Add a delivery, waiting while full; False if `stop` was set first (not added)."""
        with self._cond:
            # An empty buffer takes any delivery, however large, or it would never move.
            while self._items and self.depth + delivery.weight > self.max_readings:
                if stop.is_set():
                    return False
                self._cond.wait(poll_s)
            self._items.append(delivery)
            self._last_arrival = delivery.arrived
            self.depth += delivery.weight
            # The flusher only needs waking to start the clock or for a full batch; a
            # notify per message would cost the network thread more than the rest of put.
            if len(self._items) == 1 or self.depth >= self.batch_size:
                self._cond.notify_all()
            return True

    def take(self, max_wait_s: float, idle_s: float, stop: threading.Event) -> list[Delivery]:
        """The next batch: at most `self.batch_size` readings (at least one delivery).

        Waits until a full batch is there, the oldest delivery has waited `max_wait_s`, or
        nothing has arrived for `idle_s`. The last one matters with a broker that sends only
        a few unacknowledged messages at a time (mosquitto's max_inflight_messages defaults
        to 20): they would otherwise sit out `max_wait_s` every time. When `stop` is set it
        returns what there is at once (maybe nothing).
        """
        with self._cond:
            while not stop.is_set() and self.depth < self.batch_size:
                if not self._items:
                    self._cond.wait(max_wait_s)
                    continue
                deadline = min(self._items[0].arrived + max_wait_s, self._last_arrival + idle_s)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[Delivery] = []
            size = 0
            while self._items and (not batch or size + self._items[0].weight <= self.batch_size):
                delivery = self._items.popleft()
                batch.append(delivery)
                size += delivery.weight
            self.depth -= size
            self._cond.notify_all()
            return batch

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
