"""The publisher and the whole edge process against a real TLS mosquitto (deploy/mosquitto)."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO, wait_for
from edge_harness import (
    PASSWORD,
    ROUTE_B_ID,
    edge_env,
    edge_status,
    kill_left_over,
    start_edge,
    start_simulator,
    stored,
)

from contracts.message import Reading, parse_payload
from contracts.mqtt import MqttSettings, make_client
from devstack.secure_broker import DEPLOY_DIR, SecureMosquittoServer
from edge.outbox import Outbox
from edge.publisher import REFUSAL_KEY, Publisher, PublisherSettings

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2025, 12, 17, 3, 4, 5, 250_000, tzinfo=UTC)


class Subscriber:
    """The gateway's view: a persistent QoS 1 subscription that records every payload."""

    def __init__(self, broker: SecureMosquittoServer, client_id: str) -> None:
        settings = MqttSettings.from_url(
            broker.url_for("gateway"), ca_cert=str(broker.ca_path), client_id=client_id
        )
        self.payloads: queue.Queue[bytes] = queue.Queue()
        self.readings: list[Reading] = []
        self.messages = 0
        self.client = make_client(settings, persistent_session=True)
        self.client.on_connect = self._subscribe
        self.client.on_message = lambda c, u, msg: self.payloads.put(msg.payload)
        self.client.loop_start()

    @staticmethod
    def _subscribe(client: mqtt.Client, *_: object) -> None:
        client.subscribe([("home/power", 1), ("home/power/#", 1)])

    def collect(self) -> list[Reading]:
        while not self.payloads.empty():
            parsed = parse_payload(self.payloads.get())
            assert not parsed.rejected, parsed.rejected
            self.readings += parsed.readings
            self.messages += 1
        return self.readings

    def seqs(self) -> set[int]:
        return {r.seq for r in self.collect() if r.seq is not None}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def subscribed(broker: SecureMosquittoServer, client_id: str) -> Iterator[Subscriber]:
    sub = Subscriber(broker, client_id)
    try:
        wait_for(lambda: sub.client.is_connected(), 15, "the subscriber to connect")
        time.sleep(0.2)  # SUBACK
        yield sub
    finally:
        sub.close()


def edge_mqtt(broker: SecureMosquittoServer, protocol: str = "3.1.1") -> MqttSettings:
    return MqttSettings.from_url(
        broker.url_for("edge"),
        ca_cert=str(broker.ca_path),
        client_id="edge-test",
        protocol=protocol,
    )


def test_publisher_delivers_and_empties_the_outbox(mosquitto_tls, tmp_path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox, subscribed(mosquitto_tls, "sub-deliver") as sub:
        outbox.add_many(
            Reading(ts=T0 + timedelta(seconds=i), source="meter1", instant_power_w=float(i))
            for i in range(1200)
        )
        publisher = Publisher(path, edge_mqtt(mosquitto_tls), PublisherSettings(batch_size=500))
        publisher.start()
        try:
            wait_for(lambda: outbox.pending() == 0, 30, "the backlog to drain")
            outbox.add(Reading(ts=T0 + timedelta(hours=1), source="meter1", energy_import_kwh=5.0))
            publisher.wake()
            wait_for(lambda: outbox.pending() == 0, 30, "the new reading")
            wait_for(lambda: len(sub.seqs()) == 1201, 15, "every reading at the subscriber")
        finally:
            publisher.stop()
    # The backlog went as arrays of at most 500, oldest first; the single one as an object.
    assert sub.messages == 4
    assert [r.seq for r in sub.readings] == list(range(1, 1202))
    assert sub.readings[-1].energy_import_kwh == 5.0


def test_each_message_carries_one_source_on_its_topic(mosquitto, tmp_path) -> None:
    # An outbox that holds two sources (SOURCE_DEFAULT changed): each run of one source goes
    # to `<topic>/<source>`, the one topic the broker lets that source's edge write.
    topic = f"t{uuid.uuid4().hex[:8]}/power"
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    listener = make_client(MqttSettings.from_url(mosquitto.url, client_id=f"l-{topic}"))
    listener.on_connect = lambda c, *_: c.subscribe(f"{topic}/#", qos=1)
    listener.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload))
    listener.loop_start()
    path = tmp_path / "outbox.db"
    sources = ["meter1"] * 3 + ["meter2"] * 2 + ["meter1"]
    try:
        wait_for(listener.is_connected, 15, "the listener to connect")
        time.sleep(0.2)  # SUBACK
        with Outbox(path) as outbox:
            outbox.add_many(
                Reading(ts=T0 + timedelta(seconds=i), source=s, instant_power_w=float(i))
                for i, s in enumerate(sources)
            )
            settings = MqttSettings.from_url(mosquitto.url, topic=topic, client_id=f"e-{topic}")
            publisher = Publisher(path, settings).start()
            try:
                wait_for(lambda: outbox.pending() == 0, 30, "the outbox to drain")
            finally:
                publisher.stop()
        messages = [received.get(timeout=5) for _ in range(3)]
    finally:
        listener.disconnect()
        listener.loop_stop()
    shape = [
        (t, [r.source for r in parse_payload(p, t, base_topic=topic).readings]) for t, p in messages
    ]
    assert shape == [
        (f"{topic}/meter1", ["meter1"] * 3),
        (f"{topic}/meter2", ["meter2"] * 2),
        (f"{topic}/meter1", ["meter1"]),
    ]


def test_nothing_is_deleted_without_a_puback(tmp_path) -> None:
    """A broker that is not there acknowledges nothing: the outbox keeps every reading."""
    path = tmp_path / "outbox.db"
    unreachable = MqttSettings.from_url("mqtts://edge:x@127.0.0.1:9", ca_cert=None)
    with Outbox(path) as outbox:
        outbox.add(Reading(ts=T0, source="meter1", instant_power_w=1.0))
        publisher = Publisher(path, unreachable, PublisherSettings(idle_wait_s=0.1)).start()
        time.sleep(1.0)
        publisher.stop()
        assert outbox.pending() == 1


WRONG_ACL = """user edge
topic write home/somewhere-else
user gateway
topic read home/power
topic read home/power/#
"""


class MisconfiguredBroker(SecureMosquittoServer):
    """deploy/mosquitto with an operator's mistake: the edge may not write its topic."""

    def _prepare_secrets(self) -> None:
        super()._prepare_secrets()
        (self.config_dir / "aclfile").write_text(WRONG_ACL)

    def fix_acl(self) -> None:
        """The operator corrects the ACL and reloads the broker (SIGHUP), no restart."""
        (self.config_dir / "aclfile").write_text((DEPLOY_DIR / "aclfile").read_text())
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)


def test_a_refused_publish_keeps_its_readings_until_the_acl_is_fixed(tmp_path, caplog) -> None:
    path = tmp_path / "outbox.db"
    caplog.set_level(logging.INFO, logger="edge.publisher")
    settings = PublisherSettings(batch_size=10, idle_wait_s=0.05, refused_retry_s=0.3)
    with (
        MisconfiguredBroker(tmp_path / "broker") as broker,
        Outbox(path) as outbox,
        subscribed(broker, "sub-refused") as sub,
    ):
        outbox.add_many(
            Reading(ts=T0 + timedelta(seconds=i), source="meter1", instant_power_w=float(i))
            for i in range(25)
        )
        publisher = Publisher(path, edge_mqtt(broker, protocol="5"), settings).start()
        try:
            wait_for(lambda: publisher.refused >= 6, 30, "refusals and retries")
            assert outbox.pending() == 25 and publisher.delivered == 0
            refusal = json.loads(outbox.state(REFUSAL_KEY) or "{}")
            assert refusal["reason"] == "Not authorized" and refusal["refused"] >= 6
            assert not sub.collect()
            status = edge_status(path)
            assert "REFUSING publishes since" in status and "Not authorized (0x87)" in status
            assert "pending         25 readings" in status
            broker.fix_acl()
            wait_for(lambda: outbox.pending() == 0, 30, "delivery after the ACL fix")
            wait_for(lambda: len(sub.seqs()) == 25, 15, "every reading at the subscriber")
        finally:
            publisher.stop()
        assert outbox.state(REFUSAL_KEY) is None
    assert "broker          accepting (last delivery 20" in edge_status(path)
    assert sub.seqs() == set(range(1, 26))
    refusal_logs = [r for r in caplog.records if "refused a publish" in r.getMessage()]
    assert len(refusal_logs) == 1  # once per kind, not once per retry
    assert "Not authorized" in refusal_logs[0].getMessage()


# --- the edge process: simulator -> python -m edge -> broker -----------------------------


def test_broker_outage_and_kill9_lose_nothing(private_broker, tmp_path) -> None:
    outbox, log = tmp_path / "outbox.db", tmp_path / "edge.log"
    simulator, pty = start_simulator(tmp_path, "--check-credentials")
    edge = None
    try:
        with subscribed(private_broker, "sub-outage") as sub:
            env = edge_env(private_broker, pty, outbox)
            edge = start_edge(env, log)
            wait_for(lambda: len(sub.seqs()) >= 5, 30, f"first readings (see {log})")

            private_broker.stop()
            time.sleep(0.3)
            _, before = stored(outbox)
            wait_for(lambda: stored(outbox)[1] >= before + 8, 15, "readings during the outage")
            edge.send_signal(signal.SIGKILL)
            edge.wait(10)
            pending, _ = stored(outbox)
            assert pending >= 8, "the outage readings must be waiting in the outbox"

            private_broker.start()
            edge = start_edge(env, log)
            wait_for(lambda: stored(outbox)[1] >= before + 15, 30, "readings after the restart")
            edge.send_signal(signal.SIGTERM)
            assert edge.wait(15) == 0
            wait_for(lambda: stored(outbox)[0] == 0, 30, "an empty outbox")  # nothing left
            last = stored(outbox)[1]
            wait_for(lambda: max(sub.seqs()) == last, 30, "the last reading at the subscriber")
            readings = sub.collect()
    finally:
        kill_left_over(edge, simulator)
    # Every reading that was ever stored arrived; repeats (a batch in flight at the kill) are
    # the same (source, ts) point, which InfluxDB stores once.
    assert sub.seqs() == set(range(1, last + 1))
    points = {(r.source, r.ts): r for r in readings}
    assert len(points) == last
    assert all(r.energy_import_kwh is not None for r in readings)
    # Live readings carry power; the meter's half-hour registers (read back from its memory
    # on this first start) carry energy only, at their boundary.
    registers = [r for r in readings if r.instant_power_w is None]
    assert registers and all(r.ts.minute % 30 == 0 and r.ts.second == 0 for r in registers)
    assert len(registers) < len(readings)
    log_text = log.read_text()
    assert PASSWORD not in log_text and ROUTE_B_ID not in log_text
    assert "SKSETPWD C ***" in log_text


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"EDGE_MODULE": "bp35x9"}, "EDGE_MODULE 'bp35x9'"),
        ({"EDGE_RECOVERY_DAYS": "120"}, "EDGE_RECOVERY_DAYS must be 0..99, got 120"),
        (
            {"EDGE_RECOVERY_REQUESTS_PER_MINUTE": "0"},
            "EDGE_RECOVERY_REQUESTS_PER_MINUTE must be positive, got '0'",
        ),
        ({"EDGE_METER_TZ": "Mars/Olympus"}, "EDGE_METER_TZ 'Mars/Olympus' is not a time zone"),
    ],
)
def test_edge_refuses_a_bad_configuration(setting: dict[str, str], message: str) -> None:
    env = {**os.environ, "EDGE_SERIAL_PORT": "/dev/null", **setting}
    result = subprocess.run(
        [sys.executable, "-m", "edge"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1  # SystemExit with a message
    assert result.stderr.startswith("edge: ")
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
