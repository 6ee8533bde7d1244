"""Publishes the outbox to the broker, QoS 1, and deletes what the broker acknowledged.

One thread owns its own Outbox connection and does all the work; paho's network thread only
puts what happened (connected, disconnected, PUBACK for mid n) on a queue. While connected,
the oldest readings go out first, one JSON object when one reading is waiting, JSON arrays of
up to `batch_size` when a backlog is (design.md section 1), with at most `window` messages
awaiting their PUBACK. A message holds one source's readings and goes to
`<MQTT_TOPIC>/<source>`, the one topic deploy/mosquitto lets that edge write. After a
reconnect everything not yet acknowledged is sent again from the outbox (at least once;
InfluxDB's (source, ts) points make the repeat a no-op).

A PUBACK is a delivery only when its reason code says so (MQTT 5, design.md section 10): a
refusal (not authorised by the ACL, quota exceeded, payload format invalid...) leaves the
readings in the outbox, is logged once per kind, is stored in the outbox's state for
`python -m edge status`, and the outbox is offered again after `refused_retry_s` (an operator
who fixes the ACL and reloads the broker gets everything without restarting the edge).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from contracts.message import MAX_PAYLOAD_BYTES, Reading, format_ts, source_topic, to_payload
from contracts.mqtt import MqttSettings, make_client
from edge.outbox import Outbox

log = logging.getLogger(__name__)

# Outbox state keys (read by `python -m edge status`).
REFUSAL_KEY = "broker_refusal"  # JSON: reason, code, since, refused (messages)
DELIVERY_KEY = "last_delivery"  # when the broker last accepted a message
DELIVERY_NOTE_S = 60.0


@dataclass(frozen=True)
class PublisherSettings:
    batch_size: int = 500  # ~50 kB per array, well under the gateway's payload limit
    window: int = 10  # messages awaiting PUBACK at once
    idle_wait_s: float = 1.0  # how long the loop sleeps when there is nothing to do
    refused_retry_s: float = 60.0  # after a refusal, offer the outbox again this much later


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
        self._events: queue.Queue[tuple[str, int, ReasonCode | None]] = queue.Queue()
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
        self.refused = 0  # messages the broker refused since start
        self._refusal: dict[str, object] | None = None  # the current refusal, as stored
        self._logged_refusals: set[int] = set()  # reason codes logged since the last delivery
        self._retry_at: float | None = None  # monotonic time to offer the outbox again
        self._stop_by = 0.0  # monotonic deadline of the flush stop() allows
        self._delivery_noted = float("-inf")  # monotonic time DELIVERY_KEY was last written

    # paho's thread: report, nothing else -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags, reason, props) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self._events.put(("connected", 0, None))

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags, reason, props) -> None:
        self._events.put(("disconnected", 0, None))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, props
    ) -> None:
        # MQTT 3.1.1 PUBACKs have no reason code: paho reports Success for them.
        self._events.put(("refused" if reason.is_failure else "acked", mid, reason))

    # Life cycle -------------------------------------------------------------------------

    def start(self) -> Publisher:
        self.client.loop_start()
        self._thread.start()
        return self

    def wake(self) -> None:
        """New readings are in the outbox: send them now rather than after the idle wait."""
        self._events.put(("wake", 0, None))

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is waiting (while connected, for at most `timeout`), then disconnect."""
        self._stop_by = time.monotonic() + timeout
        self._stop.set()
        self.wake()
        self._thread.join(timeout + 1)
        self.client.disconnect()
        self.client.loop_stop()

    # The publisher thread ---------------------------------------------------------------

    def _run(self) -> None:
        with Outbox(self._outbox_path) as outbox:
            self._refusal = json.loads(outbox.state(REFUSAL_KEY) or "null")
            while not self._stop.is_set() or self._flushing(outbox):
                self._handle_events(outbox)
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._retry_at, self._sent_upto = None, 0  # offer everything again
                if self._connected and self._retry_at is None:
                    self._send(outbox)

    def _flushing(self, outbox: Outbox) -> bool:
        """After stop(): go on while the broker takes what is waiting and time is left."""
        deliverable = self._connected and self._retry_at is None
        waiting = bool(self._in_flight) or outbox.pending() > 0
        return deliverable and waiting and time.monotonic() < self._stop_by

    def _handle_events(self, outbox: Outbox) -> None:
        try:
            event = self._events.get(timeout=self.settings.idle_wait_s)
        except queue.Empty:
            return
        acked: list[int] = []
        while True:
            kind, mid, reason = event
            if kind == "acked" and mid in self._in_flight:
                acked += self._in_flight.pop(mid)
            elif kind == "refused" and mid in self._in_flight and reason is not None:
                self._in_flight.pop(mid)
                self._note_refusal(outbox, reason)
            elif kind == "connected":
                log.info("connected to %s", self.mqtt_settings)
                self._connected, self._sent_upto, self._retry_at = True, 0, None
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
            self._note_delivery(outbox)

    def _note_refusal(self, outbox: Outbox, reason: ReasonCode) -> None:
        """Keep the readings; say why once per kind; try again after `refused_retry_s`."""
        if reason.value not in self._logged_refusals:
            self._logged_refusals.add(reason.value)
            log.error(
                "the broker refused a publish to %r: %s (0x%02X); the readings stay in the "
                "outbox and are offered again every %.0fs",
                self.mqtt_settings.topic,
                reason,
                reason.value,
                self.settings.refused_retry_s,
            )
        previous = self._refusal or {"since": format_ts(datetime.now(UTC)), "refused": 0}
        self._refusal = {
            "reason": str(reason),
            "code": reason.value,
            "since": previous["since"],
            "refused": int(previous["refused"]) + 1,  # type: ignore[call-overload]
        }
        outbox.set_state({REFUSAL_KEY: json.dumps(self._refusal)})
        # Counted once stored: whoever reads the count finds at least as many in the outbox.
        self.refused += 1
        self._retry_at = time.monotonic() + self.settings.refused_retry_s

    def _note_delivery(self, outbox: Outbox) -> None:
        """Clear a refusal; note the time of delivery (once a minute: each commit is an fsync
        on the Pi's SD card)."""
        now = time.monotonic()
        if self._refusal is None and now - self._delivery_noted < DELIVERY_NOTE_S:
            return
        if self._refusal is not None:
            log.warning("the broker accepts publishes again (%s)", self._refusal["reason"])
        self._refusal = None
        self._logged_refusals.clear()
        self._delivery_noted = now
        outbox.set_state({REFUSAL_KEY: None, DELIVERY_KEY: format_ts(datetime.now(UTC))})

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
