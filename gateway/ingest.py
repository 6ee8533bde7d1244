"""MQTT intake -> buffer -> InfluxDB, acknowledging each message only once it is stored.

Two threads: paho's network thread validates each message and puts it in the buffer (it
waits there when the buffer is full: that is the back-pressure, the broker keeps the rest);
the flusher takes batches, writes them (retrying with capped backoff while InfluxDB is
away) and then acknowledges them in arrival order. "Stored" means accepted by InfluxDB or,
for what cannot be stored, written and fsynced to the dead letters.

The session is persistent (fixed client id, clean_session False), so whatever was not
acknowledged (unwritten, or in flight at a crash) is redelivered by the broker. An ack is
only sent on the connection its message arrived on: after a reconnect the broker resends
unacknowledged messages itself, and a stale packet id could by then name a newer message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from contracts.message import ParsedPayload, Reading, Rejected, parse_payload, to_payload
from contracts.mqtt import MqttSettings, make_client
from gateway.buffer import Delivery, DeliveryBuffer
from gateway.deadletters import DeadLetters
from gateway.influx_writer import InfluxUnavailable, InfluxWriter
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5


class Gateway:
    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: GatewaySettings,
        writer: InfluxWriter,
        deadletters: DeadLetters,
        metrics: GatewayMetrics,
        fallback_source: str,
    ) -> None:
        self.mqtt_settings = mqtt_settings
        self.settings = settings
        self.writer = writer
        self.deadletters = deadletters
        self.metrics = metrics
        self.buffer = DeliveryBuffer(settings.buffer_readings, settings.batch_size)
        self.closing = threading.Event()  # no more intake; flush what is buffered
        self.abort = threading.Event()  # stop retrying; leave the rest unacknowledged
        self.broker_connected = False
        self.subscribed = False
        self.influx_ok = True
        self.last_reading_at: float | None = None  # time.time() of the last valid reading
        self.fallback_source = fallback_source  # SOURCE_DEFAULT
        # Told what InfluxDB took, after each write (the live power for Home Assistant).
        self.on_stored: Callable[[list[Reading]], None] | None = None
        self._connection = 0  # numbers the broker connections, for acks
        self._ack_lock = threading.Lock()
        self._flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
        self.client = make_client(mqtt_settings, persistent_session=True, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        metrics.add_gauge(
            "gateway_buffer_readings",
            "Readings buffered, not yet written.",
            lambda: self.buffer.depth,
        )
        metrics.add_gauge(
            "gateway_broker_connected",
            "1 when connected to the broker.",
            lambda: self.broker_connected,
        )

    @property
    def topics(self) -> list[tuple[str, int]]:
        """The base topic and `<base>/<source>`, both QoS 1."""
        base = self.mqtt_settings.topic.rstrip("/")
        return [(base, 1), (base + "/+", 1)]

    def start(self) -> None:
        self._flusher.start()
        self.client.loop_start()

    def stop(self) -> None:
        """Flush and acknowledge what is buffered (for up to shutdown_seconds), then disconnect."""
        self.closing.set()
        self.buffer.wake()
        self._flusher.join(self.settings.shutdown_seconds)
        if self._flusher.is_alive():
            log.warning(
                "InfluxDB did not take the rest in time; the broker keeps it unacknowledged"
            )
            self.abort.set()
            self._flusher.join()
        # The PUBACKs queued above go out before DISCONNECT: paho sends its queue in order.
        self.client.disconnect()
        self.client.loop_stop()

    # --- MQTT callbacks (paho's network thread) ---------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: object, flags, reason_code, _p) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            self._connection += 1
            self.broker_connected = True
        # A session the broker kept still has our subscriptions; the first connect of this
        # process subscribes anyway, in case MQTT_TOPIC changed.
        if flags.session_present and self.subscribed:
            log.info("connected to %s, session resumed", self.mqtt_settings)
        else:
            log.info("connected to %s, subscribing to %s", self.mqtt_settings, self.topics)
            self.subscribed = False  # until the SUBACK says so
            client.subscribe(self.topics)

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        log.warning("cannot connect to the broker at %s; retrying", self.mqtt_settings)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _flags, reason_code, _p) -> None:
        with self._ack_lock:
            self.broker_connected = False
        if not self.closing.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reason_codes, _p) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        self.subscribed = not failed
        if failed:
            log.error("the broker refused the subscription to %s: %s", self.topics, failed)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self.metrics.messages_received.inc()
        try:
            parsed = parse_payload(
                message.payload,
                message.topic,
                base_topic=self.mqtt_settings.topic,
                fallback_source=self.fallback_source,
            )
            if parsed.rejected:
                self._reject(message.topic, message.payload, parsed)
        except Exception as exc:  # a bug of ours must not kill the network thread
            log.exception("failed to handle a message on %s", message.topic)
            self._dead_letter(message.topic, message.payload, f"gateway error: {exc!r}")
            parsed = ParsedPayload()
        if parsed.readings:
            self.metrics.readings_received.inc(len(parsed.readings))
            self.last_reading_at = time.time()
        delivery = Delivery(
            message.mid, message.qos, self._connection, message.topic, parsed.readings
        )
        # When closing, the message stays unacknowledged: the broker delivers it again.
        self.buffer.put(delivery, self.closing)

    # --- dead letters -------------------------------------------------------------------

    def _reject(self, topic: str, payload: bytes, parsed: ParsedPayload) -> None:
        first = parsed.rejected[0].reason
        total = len(parsed.rejected) + len(parsed.readings)
        elements: list[Rejected] = []
        if parsed.rejected[0].index is not None:  # elements of an array
            elements = parsed.rejected
            if len(parsed.rejected) > 1:
                first = f"{len(parsed.rejected)} of {total} elements refused; {first}"
        self.metrics.readings_rejected.inc(len(parsed.rejected))
        self._dead_letter(topic, payload, first, elements)

    def _dead_letter(
        self, topic: str, payload: bytes, reason: str, rejected: Sequence[Rejected] = ()
    ) -> None:
        self.deadletters.add(topic, payload, reason, rejected)
        self.metrics.deadletters.inc()

    # --- the flusher thread ---------------------------------------------------------------

    def _flush_loop(self) -> None:
        while True:
            batch = self.buffer.take(
                self.settings.flush_seconds,
                self.settings.flush_idle_seconds,
                self.closing,
            )
            if not batch:
                if self.closing.is_set():
                    return
                continue
            if not self._store(batch):
                return
            self._ack(batch)

    def _store(self, batch: list[Delivery]) -> bool:
        """Write the batch to InfluxDB, retrying until it is taken; False if told to abort."""
        readings = [r for d in batch for r in d.readings]
        topics = [d.topic for d in batch for _ in d.readings]
        delay = RETRY_MIN_S
        while readings:
            try:
                refused = self.writer.write(readings)
                break
            except InfluxUnavailable as exc:
                self.influx_ok = False
                log.warning("%s; %d readings wait, retry in %.1fs", exc, len(readings), delay)
                if self.abort.wait(delay):
                    return False
                delay = min(delay * 2, self.settings.retry_max_seconds)
        else:
            refused = []
        if readings:
            self.influx_ok = True
            self.metrics.batches.inc()
            self._account_written(readings, refused)
        for index, reason in refused:
            self._dead_letter(topics[index], to_payload(readings[index]), reason)
        self.metrics.readings_rejected.inc(len(refused))
        self.deadletters.sync()
        return True

    def _account_written(self, readings: list[Reading], refused: list[tuple[int, str]]) -> None:
        now = datetime.now(UTC)
        self.metrics.readings_written.inc(len(readings) - len(refused))
        refused_at = {index for index, _ in refused}
        for index, reading in enumerate(readings):
            if index not in refused_at:
                self.metrics.reading_delay.observe((now - reading.ts).total_seconds())
        if self.on_stored:
            self.on_stored([r for i, r in enumerate(readings) if i not in refused_at])

    def _ack(self, batch: list[Delivery]) -> None:
        with self._ack_lock:
            if not self.broker_connected:
                return
            for delivery in batch:
                if delivery.connection == self._connection:
                    self.client.ack(delivery.mid, delivery.qos)
