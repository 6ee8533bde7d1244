"""Publishes the outbox to the broker, QoS 1, and deletes what the broker acknowledged.

One thread owns its own Outbox connection and does all the work; paho's network thread only
puts what happened (connected, disconnected, PUBACK for mid n) on a queue. While connected,
the oldest readings go out first, one JSON object when one reading is waiting, JSON arrays of
up to `batch_size` when a backlog is (design.md section 1), with at most `window` messages
awaiting their PUBACK. A message holds one source's readings and goes to
`<MQTT_TOPIC>/<source>`, the one topic deploy/mosquitto lets that edge write. After a
reconnect everything not yet acknowledged is sent again from the outbox (at least once;
InfluxDB's (source, ts) points make the repeat a no-op).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

import paho.mqtt.client as mqtt

from contracts.message import MAX_PAYLOAD_BYTES, Reading, source_topic, to_payload
from contracts.mqtt import MqttSettings, make_client
from edge.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherSettings:
    batch_size: int = 500  # ~50 kB per array, well under the gateway's payload limit
    window: int = 10  # messages awaiting PUBACK at once
    idle_wait_s: float = 1.0  # how long the loop sleeps when there is nothing to do


class Publisher:
    def __init__(
        self,
        outbox_path: Path | str,
        mqtt_settings: MqttSettings,
        settings: PublisherSettings | None = None,
    ) -> None:
        self.settings = settings or PublisherSettings()
        self.mqtt_settings = mqtt_settings
        self._outbox_path = outbox_path
        self._events: queue.Queue[tuple[str, int]] = queue.Queue()
        self._in_flight: dict[int, list[int]] = {}  # mid -> seqs it carries
        self._sent_upto = 0  # highest seq handed to the client since the last connect
        self._connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-publisher", daemon=True)
        self.client = make_client(mqtt_settings)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.delivered = 0  # readings acknowledged since start

    # paho's thread: report, nothing else -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags, reason, props) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self._events.put(("connected", 0))

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags, reason, props) -> None:
        self._events.put(("disconnected", 0))

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason, props) -> None:
        self._events.put(("acked", mid))

    # Life cycle -------------------------------------------------------------------------

    def start(self) -> Publisher:
        self.client.loop_start()
        self._thread.start()
        return self

    def wake(self) -> None:
        """New readings are in the outbox: send them now rather than after the idle wait."""
        self._events.put(("wake", 0))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    # The publisher thread ---------------------------------------------------------------

    def _run(self) -> None:
        with Outbox(self._outbox_path) as outbox:
            while not self._stop.is_set():
                self._handle_events(outbox)
                if self._connected:
                    self._send(outbox)

    def _handle_events(self, outbox: Outbox) -> None:
        try:
            event = self._events.get(timeout=self.settings.idle_wait_s)
        except queue.Empty:
            return
        acked: list[int] = []
        while True:
            kind, mid = event
            if kind == "acked" and mid in self._in_flight:
                acked += self._in_flight.pop(mid)
            elif kind == "connected":
                log.info("connected to %s", self.mqtt_settings)
                self._connected, self._sent_upto = True, 0
                self._in_flight.clear()  # resent from the outbox below
            elif kind == "disconnected":
                if self._connected:
                    log.warning("broker connection lost; readings wait in the outbox")
                self._connected = False
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
        if acked:
            outbox.delete(acked)
            self.delivered += len(acked)

    def _send(self, outbox: Outbox) -> None:
        while len(self._in_flight) < self.settings.window:
            readings = outbox.oldest(self.settings.batch_size, after_seq=self._sent_upto)
            if not readings:
                return
            # One source a message, on its own topic: the broker lets an edge write only there.
            readings = _first_source(readings)
            topic = source_topic(self.mqtt_settings.topic, readings[0].source)
            info = self.client.publish(topic, _payload(readings), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # disconnected meanwhile: the connect event restarts the replay
            self._in_flight[info.mid] = [r.seq for r in readings if r.seq is not None]
            self._sent_upto = readings[-1].seq or self._sent_upto


def _first_source(readings: list[Reading]) -> list[Reading]:
    """The oldest readings up to the first of another source (SOURCE_DEFAULT was changed)."""
    source = readings[0].source
    return list(takewhile(lambda r: r.source == source, readings))


def _payload(readings: list[Reading]) -> bytes:
    payload = to_payload(readings[0] if len(readings) == 1 else readings)
    if len(payload) > MAX_PAYLOAD_BYTES:  # cannot happen at the default batch size
        raise ValueError(f"batch of {len(readings)} readings is {len(payload)} bytes")
    return payload
