"""`python -m edge`: poll the meter, store every reading in the outbox, publish in the background.

Reading and publishing are decoupled by the outbox: the meter loop never waits for the
network, and the publisher never waits for the meter. Whatever fails (the module, the
session, the broker) is logged and retried with a bounded back-off; nothing is dropped.
Between live polls the loop reads back the half-hour registers it still owes from the
meter's memory (edge.recovery) and publishes the meter's half-hourly pushes.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import serial

from contracts.message import Reading, format_ts, parse_ts, source_setting
from contracts.mqtt import MqttSettings
from contracts.settings import Environment, SettingError
from edge import echonet as el
from edge.credentials import Credentials
from edge.meter import CUMULATIVE, FIELD_PROPERTIES, Meter, parse_fields
from edge.outbox import DEFAULT_MAX_READINGS, Outbox
from edge.publisher import Publisher
from edge.recovery import RECOVERED_KEY, Recovery, RecoverySettings
from edge.skstack import (
    Driver,
    NoAnswer,
    SessionLost,
    Settings,
    SkstackError,
    module_family,
    rssi_from_lqi,
)

log = logging.getLogger("edge")

# Outbox state keys (besides the publisher's and the recovery watermark)
STATE_KEY = "meter_counters"
LAST_READ_KEY = "last_read_at"
LINK_KEY = "link_quality"
UNPARSED_KEY = "unparsed_lines"
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class EdgeConfig:
    serial_port: str
    module: str = "bp35a1"
    poll_seconds: float = 10.0
    outbox_path: Path = Path("data/edge/outbox.sqlite3")
    outbox_max_readings: int = DEFAULT_MAX_READINGS
    fields: tuple[str, ...] = tuple(FIELD_PROPERTIES)
    source: str = "meter1"
    request_spacing_s: float = Settings.request_spacing_s
    baudrate: int = 115200
    recovery: RecoverySettings = field(default_factory=RecoverySettings)

    @classmethod
    def from_env(cls, env: Environment) -> EdgeConfig:
        serial_port = env.optional("EDGE_SERIAL_PORT")
        if not serial_port:
            raise SettingError("set EDGE_SERIAL_PORT (e.g. /dev/ttyUSB0, or the simulator's pty)")
        module = env.text("EDGE_MODULE", cls.module)
        module_family(module)  # fail at start on a typo, not at the first connect
        return cls(
            serial_port=serial_port,
            module=module,
            poll_seconds=env.number("EDGE_POLL_SECONDS", cls.poll_seconds),
            outbox_path=outbox_path(env),
            outbox_max_readings=env.integer("EDGE_OUTBOX_MAX_READINGS", DEFAULT_MAX_READINGS),
            fields=parse_fields(env.text("EDGE_PROPERTIES", ",".join(FIELD_PROPERTIES))),
            source=source_setting(env),
            request_spacing_s=env.number(
                "EDGE_REQUEST_SPACING_SECONDS", Settings.request_spacing_s, zero=True
            ),
            recovery=RecoverySettings(
                max_days=env.integer("EDGE_RECOVERY_DAYS", RecoverySettings.max_days, zero=True),
                requests_per_minute=env.number(
                    "EDGE_RECOVERY_REQUESTS_PER_MINUTE", RecoverySettings.requests_per_minute
                ),
                meter_tz=env.zone("EDGE_METER_TZ", RecoverySettings().meter_tz.key),
            ),
        )


def outbox_path(env: Environment) -> Path:
    """EDGE_OUTBOX_PATH: the edge and `python -m edge status` open the same outbox."""
    return env.path("EDGE_OUTBOX_PATH", EdgeConfig.outbox_path)


@dataclass(frozen=True)
class EdgeSettings:
    """Everything `python -m edge` reads from its environment, read once at start."""

    config: EdgeConfig
    credentials: Credentials
    mqtt: MqttSettings
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Environment) -> EdgeSettings:
        """Raises ValueError naming the variable and its bad value (never a secret)."""
        return cls(
            log_level=env.log_level("EDGE_LOG_LEVEL"),
            config=EdgeConfig.from_env(env),
            credentials=Credentials.from_env(env),
            mqtt=MqttSettings.from_env(
                env, default_client_id=f"edge-{socket.gethostname()}", default_protocol="5"
            ),
        )


class EdgeLoop:
    def __init__(
        self,
        config: EdgeConfig,
        driver: Driver,
        outbox: Outbox,
        wake: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.config, self.driver, self.outbox, self.wake = config, driver, outbox, wake
        self.meter = Meter(driver, config.source, config.fields, clock=now)
        self.meter.restore(outbox.state(STATE_KEY))
        watermark = outbox.state(RECOVERED_KEY)
        self.recovery = (
            Recovery(
                driver,
                self.meter,
                config.recovery,
                parse_ts(watermark) if watermark else None,
                clock=driver.clock,
                now=now,
            )
            if CUMULATIVE & set(config.fields) and config.recovery.max_days > 0
            else None
        )
        self.stop = threading.Event()
        self._backoff = 0.0

    def run(self) -> None:
        next_poll = time.monotonic()
        while not self.stop.is_set():
            self.poll_once()
            # A fixed schedule, not "sleep after": readings stay evenly spaced.
            next_poll = max(next_poll + self.config.poll_seconds, time.monotonic())
            self.stop.wait(max(next_poll - time.monotonic(), self._backoff))

    def poll_once(self) -> None:
        """One live reading, the pushes that came meanwhile, and a read-back step if due."""
        try:
            if not self.driver.joined:
                self.driver.connect()
                self.meter.scale = None  # re-read after every join: a new meter is possible
                if self.recovery:
                    self.recovery.session_started()
            self._store_live(self.meter.read())
            if self.recovery:
                self._take_pushes(self.recovery)
                if self.recovery.due():
                    self._store_registers(self.recovery, *self.recovery.step())
        except NoAnswer as exc:
            log.info("%s", exc)
            return
        except SessionLost as exc:
            log.warning("session lost: %s; rejoining", exc)
            return
        except (SkstackError, el.EchonetError) as exc:  # a dead serial port ends the process
            self._backoff = min(MAX_BACKOFF_S, max(1.0, self._backoff * 2))
            log.error("meter: %s; retrying in %.0fs", exc, self._backoff)
            self.driver.joined = False
            return
        self._backoff = 0.0

    def _store_live(self, reading: Reading | None) -> None:
        if reading is None:
            log.info("the meter answered without any of %s", ", ".join(self.config.fields))
            return
        seq = self.outbox.add(
            reading, {**self._status_state(), LAST_READ_KEY: format_ts(reading.ts)}
        )
        self.wake()
        log.debug("reading %d stored: %s", seq, reading.measurements)

    def _status_state(self) -> dict[str, str]:
        """What `python -m edge status` shows, stored with each reading (no extra commit)."""
        pan = self.driver.pan
        link = {
            "lqi": pan.lqi if pan else None,
            "rssi_from_lqi_dbm": rssi_from_lqi(pan.lqi) if pan else None,
            "rssi_dbm": self.driver.rssi,
        }
        return {
            STATE_KEY: self.meter.state(),
            LINK_KEY: json.dumps(link),
            UNPARSED_KEY: json.dumps(dict(self.driver.unparsed)),
        }

    def _take_pushes(self, recovery: Recovery) -> None:
        for frame in self.driver.take_notifications():
            try:
                self._store_registers(recovery, *recovery.pushed(frame))
            except el.EchonetError as exc:
                log.warning("ignored a malformed 0xEA/0xEB notification: %s", exc)

    def _store_registers(
        self, recovery: Recovery, readings: list[Reading], watermark: datetime | None
    ) -> None:
        """Registers and the watermark that covers them, in one commit (kill -9 safe)."""
        state = {RECOVERED_KEY: format_ts(watermark)} if watermark else {}
        if readings:
            self.outbox.add_many(readings, {**state, STATE_KEY: self.meter.state()})
            self.wake()
        elif state:
            self.outbox.set_state(dict(state))
        if watermark:
            recovery.watermark = watermark
        if readings:
            log.info(
                "meter memory: %d half-hour registers %s .. %s stored",
                len(readings),
                format_ts(readings[0].ts),
                format_ts(readings[-1].ts),
            )


def run(settings: EdgeSettings) -> None:
    config, mqtt_settings = settings.config, settings.mqtt
    outbox = Outbox(config.outbox_path, config.outbox_max_readings)
    publisher = Publisher(config.outbox_path, mqtt_settings).start()
    log.info(
        "edge: %s on %s every %ss -> %s (outbox %s, %d pending)",
        config.module,
        config.serial_port,
        config.poll_seconds,
        mqtt_settings,
        config.outbox_path,
        outbox.pending(),
    )
    with serial.Serial(config.serial_port, config.baudrate, timeout=0.05) as port:
        spacing = Settings(request_spacing_s=config.request_spacing_s)
        driver = Driver(port, module_family(config.module), settings.credentials, spacing)
        loop = EdgeLoop(config, driver, outbox, publisher.wake)
        signal.signal(signal.SIGTERM, lambda *_: loop.stop.set())
        signal.signal(signal.SIGINT, lambda *_: loop.stop.set())
        try:
            loop.run()
        finally:
            publisher.stop()
            outbox.close()


def main() -> None:
    try:
        settings = EdgeSettings.from_env(Environment())
    except ValueError as exc:  # one line, exit 1: systemd shows why it keeps restarting
        raise SystemExit(f"edge: {exc}") from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(settings)
