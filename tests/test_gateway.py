"""The gateway as a real process between a real mosquitto and a real influxd.

Each test has its own topic and client id, so persistent sessions on the shared broker never
mix. Readings carry their index in `seq` and in the values, so a lost, doubled or altered
reading shows up in the comparison with what was published.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from conftest import wait_for

from contracts.influx import InfluxSettings, make_client
from contracts.message import Reading, format_ts, to_payload
from contracts.mqtt import MqttSettings
from contracts.mqtt import make_client as make_mqtt_client
from devstack.secure_broker import REPO_ROOT, SecureMosquittoServer
from devstack.servers import GatewayServer, InfluxServer, MosquittoServer

T = TypeVar("T")
BASE_TS = datetime(2025, 12, 17, 3, 0, tzinfo=UTC)
REFUSAL_LOG = re.compile("broker refused the connection|cannot connect to the broker|disconnected")


def reading(i: int, source: str = "meter1") -> Reading:
    return Reading(
        ts=BASE_TS + timedelta(seconds=10 * i),
        source=source,
        instant_power_w=100.0 + i,
        energy_import_kwh=1000.0 + i / 8,
        seq=i,
    )


class Publisher:
    """An edge stand-in: QoS 1 publishes, each confirmed by the broker."""

    def __init__(self, broker_url: str, topic: str, ca_cert: str | None = None) -> None:
        settings = MqttSettings.from_url(
            broker_url, topic=topic, ca_cert=ca_cert, client_id=f"pub-{uuid.uuid4().hex[:8]}"
        )
        self.topic = topic
        self.client = make_mqtt_client(settings, max_inflight_messages=1000)
        connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: rc.is_failure or connected.set()
        self.client.loop_start()
        assert connected.wait(10), "the publisher could not connect"
        self.pending: list = []

    def publish(self, payload: bytes, subtopic: str = "") -> None:
        topic = f"{self.topic}/{subtopic}" if subtopic else self.topic
        self.pending.append(self.client.publish(topic, payload, qos=1))

    def close(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self.pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not confirm a publish"
        self.client.disconnect()
        self.client.loop_stop()


def publish_steadily(publisher: Publisher, readings: list[Reading], per_second: float) -> None:
    started = time.monotonic()
    for n, r in enumerate(readings):
        publisher.publish(to_payload(r))
        time.sleep(max(0.0, n / per_second - (time.monotonic() - started)))


def stored(influx_url: str, source: str = "meter1") -> list[dict]:
    client = make_client(InfluxSettings(url=influx_url))
    result = client.query(
        "SELECT * FROM power WHERE source = $source", bind_params={"source": source}, epoch="ms"
    )
    return list(result.get_points())


def as_stored(r: Reading) -> dict:
    """What InfluxDB should hold for a reading (seq is not stored; absent fields are None)."""
    return {
        "time": round(r.ts.timestamp() * 1000),
        "source": r.source,
        "instant_power_w": r.instant_power_w,
        "energy_import_kwh": r.energy_import_kwh,
        "energy_export_kwh": r.energy_export_kwh,
    }


def assert_exactly(influx_url: str, readings: list[Reading], timeout: float = 30.0) -> None:
    wait_for(lambda: len(stored(influx_url)) >= len(readings), timeout, f"{len(readings)} points")
    rows = stored(influx_url)
    for row in rows:
        row.setdefault("energy_export_kwh", None)
    assert sorted(rows, key=lambda r: r["time"]) == [as_stored(r) for r in readings]


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"MQTT_TOPIC": f"t{tag}/power", "MQTT_CLIENT_ID": f"gateway-{tag}"}


@pytest.fixture
def gateway_env(names: dict[str, str], mosquitto: MosquittoServer) -> dict[str, str]:
    return {
        **mosquitto.env(),
        **names,
        "GATEWAY_FLUSH_SECONDS": "0.05",
        "GATEWAY_RETRY_MAX_SECONDS": "1",
        "GATEWAY_SHUTDOWN_SECONDS": "5",
    }


@pytest.fixture
def publisher(mosquitto: MosquittoServer, names: dict[str, str]) -> Iterator[Publisher]:
    pub = Publisher(mosquitto.url, names["MQTT_TOPIC"])
    yield pub
    pub.close()


def metric(gateway: GatewayServer, name: str, headers: dict | None = None) -> float:
    text = httpx.get(f"{gateway.url}/metrics", headers=headers).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# --- API ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_api_answers_for_known_data(
    influx: InfluxServer, gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    token = "test-token-" + uuid.uuid4().hex
    auth = {"Authorization": f"Bearer {token}"}
    readings = [reading(i, source) for source in ("meter1", "meter2") for i in range(60)]
    env = {**gateway_env, **influx.env(), "GATEWAY_API_TOKEN": token}
    with GatewayServer(tmp_path / "gw", env) as gateway:
        for r in readings:
            publisher.publish(to_payload(r), subtopic=r.source)
        wait_for(
            lambda: metric(gateway, "gateway_readings_written_total", auth) == 120, 20, "writes"
        )
        api = httpx.Client(base_url=gateway.url, headers=auth, timeout=10)

        latest = api.get("/api/latest", params={"source": "meter2"}).json()["points"]
        assert latest == [
            {
                "source": "meter2",
                "time": format_ts(readings[-1].ts),
                "instant_power_w": 159.0,
                "energy_import_kwh": 1000.0 + 59 / 8,
            }
        ]
        assert [p["source"] for p in api.get("/api/latest").json()["points"]] == [
            "meter1",
            "meter2",
        ]

        start, end = format_ts(BASE_TS), format_ts(BASE_TS + timedelta(minutes=10))
        answer = api.get(
            "/api/readings", params={"source": "meter1", "start": start, "end": end, "every": "5m"}
        ).json()
        assert answer["every"] == "5m" and answer["start"] == start
        first, second = answer["points"]
        assert first["time"] == start and first["power_readings"] == 30
        assert first["instant_power_w"] == pytest.approx(100 + 14.5)  # mean of 100..129
        assert first["max_power_w"] == 129.0 and second["max_power_w"] == 159.0
        assert second["energy_import_kwh"] == 1000.0 + 59 / 8  # last of the interval

        assert api.get("/openapi.json").json()["info"]["title"] == "Home energy gateway"
        assert api.get("/docs").status_code == 200
        # The token guards everything but /healthz.
        for path in ("/api/latest", "/metrics", "/docs", "/openapi.json"):
            refused = httpx.get(gateway.url + path, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401, path
        health = httpx.get(f"{gateway.url}/healthz")
        assert health.status_code == 200 and health.json()["broker_connected"] is True

        bad_requests = [
            ({"source": "no spaces allowed"}, "should match pattern"),
            ({"source": "x" * 65}, "should match pattern"),
            ({"every": "5 minutes"}, "every must be a number and s, m, h or d"),
            ({"every": "0s"}, "every must be"),
            ({"every": "1m; DROP DATABASE home_energy"}, "every must be"),
            ({"start": "yesterday"}, "valid datetime"),
            ({"start": "2025-12-17T00:00:00"}, "needs a UTC offset"),
            ({"start": end, "end": start}, "start must be before end"),
            ({"start": "2020-01-01T00:00:00Z", "every": "1s"}, "more than 10000 points"),
            # Past the calendar once in UTC, outside InfluxDB's time range, a huge interval.
            ({"start": "0001-01-01T00:00:00+23:59"}, "start is out of range"),
            ({"end": "9999-12-31T23:59:59-23:59"}, "end is out of range"),
            ({"end": "0001-01-01T00:00:00Z"}, "end must be between 1677-09-22"),
            ({"start": "1600-01-01T00:00:00Z", "end": "1600-01-02T00:00:00Z"}, "must be between"),
            ({"start": "1677-09-21T00:00:00Z", "end": "1677-09-22T01:00:00Z"}, "start must be"),
            ({"start": "2262-04-12T00:00:00Z", "end": "2262-04-13T00:00:00Z"}, "must be between"),
            ({"every": "9999999d"}, "every must be at most"),
        ]
        for params, message in bad_requests:
            response = api.get("/api/readings", params=params)
            assert response.status_code == 422, (params, response.text)
            assert message in response.text, (params, response.text)
        assert api.get("/api/latest", params={"source": '" OR 1=1'}).status_code == 422


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_bad_messages_end_in_deadletters_and_the_gateway_keeps_serving(
    influx: InfluxServer, gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    good = reading(0).to_json_obj()
    future = format_ts(datetime.now(UTC) + timedelta(hours=1))
    corpus: list[tuple[bytes, str, str]] = [  # payload, topic suffix, expected reason
        (b"{not json", "", "not JSON"),
        (json.dumps(good | {"ts": 1765940400}).encode(), "", "ts must be a string"),
        (json.dumps(good | {"instant_power_w": [1]}).encode(), "", "got array"),
        (b'{"ts":"2025-12-17T03:00:00Z","instant_power_w":NaN}', "", "must be finite"),
        (json.dumps(good | {"instant_power_w": "100"}).encode(), "", "got string"),
        (json.dumps({"instant_power_w": 1.0}).encode(), "", "missing ts"),
        (json.dumps(good | {"ts": future}).encode(), "", "in the future"),
        (b'{"pad":"' + b"x" * 1_000_000 + b'"}', "", "more than the limit"),
        (json.dumps(good | {"source": "bad source!"}).encode(), "", "does not match"),
        (json.dumps(good).encode(), "bad source!", "not a source name"),
    ]
    mixed = [reading(1).to_json_obj(), good | {"energy_import_kwh": -5.0}, reading(2).to_json_obj()]
    # A point InfluxDB itself refuses: energy_export_kwh is an integer field in that shard.
    influx_refused_ts = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    write_line = "power,source=old energy_export_kwh=1i 1704067200000"
    client = make_client(InfluxSettings(url=influx.url))
    client.write_points([write_line], time_precision="ms", protocol="line")
    conflict = Reading(ts=influx_refused_ts, source="meter1", energy_export_kwh=2.5)
    batch = [reading(i) for i in range(3, 9)]
    conflicting_batch = [*batch[:3], conflict, *batch[3:]]

    with GatewayServer(tmp_path / "gw", {**gateway_env, **influx.env()}) as gateway:
        for payload, subtopic, _ in corpus:
            publisher.publish(payload, subtopic)
        publisher.publish(json.dumps(mixed).encode())
        publisher.publish(to_payload(conflicting_batch))
        publisher.publish(to_payload(reading(9)))  # after all that, still served

        expected = [reading(i) for i in range(1, 10)]
        assert_exactly(influx.url, expected, timeout=20)
        lines = wait_for(
            lambda: _lines(gateway.deadletter_path, len(corpus) + 2), 10, "dead letters"
        )
        records = [json.loads(line) for line in lines]
        for (payload, subtopic, reason), record in zip(corpus, records, strict=False):
            assert reason in record["reason"], (reason, record["reason"])
            assert record["topic"].endswith(subtopic)
            assert record["payload_bytes"] == len(payload)
            assert record["payload"] == payload[:65536].decode()
        mixed_record, refused_record = records[len(corpus) :]
        assert mixed_record["rejected"] == [
            {
                "index": 1,
                "reason": "element 1: energy_import_kwh is cumulative and cannot be "
                "negative, got -5.0",
            }
        ]
        assert "InfluxDB refused the point: 400" in refused_record["reason"]
        assert "field type conflict" in refused_record["reason"]
        assert json.loads(refused_record["payload"])["ts"] == format_ts(influx_refused_ts)

        assert metric(gateway, "gateway_deadletters_total") == len(corpus) + 2
        assert metric(gateway, "gateway_readings_rejected_total") == len(corpus) + 2
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        assert gateway.running()


@pytest.mark.timeout(120)
def test_hostile_arrays_do_not_rotate_real_dead_letters_away(
    influx: InfluxServer, gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    # Just under the payload limit: 131,000 elements, each refused for its own reason.
    zeros = b"[" + b",".join([b"0"] * 131_000) + b"]"
    real = json.dumps(reading(0).to_json_obj() | {"instant_power_w": "oops"}).encode()
    with GatewayServer(tmp_path / "gw", {**gateway_env, **influx.env()}) as gateway:
        publisher.publish(real)
        for _ in range(6):  # one more than the default number of old files kept
            publisher.publish(zeros)
        publisher.publish(to_payload(reading(1)))
        assert_exactly(influx.url, [reading(1)], timeout=60)
        wait_for(lambda: metric(gateway, "gateway_deadletters_total") == 7, 30, "dead letters")
        files = sorted(gateway.deadletter_path.parent.glob(gateway.deadletter_path.name + "*"))
        lines = [line for f in files for line in f.read_text().splitlines()]
    records = [json.loads(line) for line in lines]
    assert [r["payload"] for r in records].count(real.decode()) == 1  # still there
    hostile = [r for r in records if r["payload_bytes"] == len(zeros)]
    assert len(hostile) == 6
    for record, line in zip(records, lines, strict=True):
        if record in hostile:
            # The payload once (cut to 64 KiB, with its size and hash), a few reasons, a count.
            assert len(line) < 70_000
            assert record["payload_sha256"] == hashlib.sha256(zeros).hexdigest()
            assert record["rejected_count"] == 131_000
            assert record["rejected"][0] == {
                "index": 0,
                "reason": "element 0: a reading must be a JSON object, got int",
            }
            assert len(record["rejected"]) == 20
            assert record["reason"].startswith("131000 of 131000 elements refused; element 0:")


def _lines(path: Path, count: int) -> list[str] | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return lines if len(lines) >= count else None


# --- nothing lost -------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_influxdb_outage_loses_nothing_and_writes_each_reading_once(
    gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    readings = [reading(i) for i in range(500)]
    with InfluxServer(tmp_path / "influx") as influx:
        influx.query("CREATE DATABASE home_energy")
        with GatewayServer(tmp_path / "gw", {**gateway_env, **influx.env()}) as gateway:
            flow = threading.Thread(target=publish_steadily, args=(publisher, readings, 100))
            flow.start()
            wait_for(lambda: len(stored(influx.url)) > 50, 10, "the first writes")
            influx.stop()
            wait_for(
                lambda: httpx.get(f"{gateway.url}/healthz").status_code == 503, 10, "unhealthy"
            )
            time.sleep(2)  # readings keep coming while InfluxDB is away
            assert metric(gateway, "gateway_buffer_readings") > 0
            influx.start()
            flow.join(20)
            publisher.close()
            assert_exactly(influx.url, readings)
            assert metric(gateway, "gateway_write_errors_total") > 0
            wait_for(lambda: httpx.get(f"{gateway.url}/healthz").status_code == 200, 10, "healthy")


@pytest.mark.timeout(90)
def test_nothing_is_acknowledged_before_it_is_written(
    gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    """Received but unwritten readings survive kill -9: the broker still has them."""
    readings = [reading(i) for i in range(50)]
    influx = InfluxServer(tmp_path / "influx").start()
    try:
        influx.query("CREATE DATABASE home_energy")
        influx.stop()
        env = {**gateway_env, **influx.env()}
        gateway = GatewayServer(tmp_path / "gw", env).start()
        for r in readings:
            publisher.publish(to_payload(r))
        publisher.close()
        wait_for(lambda: metric(gateway, "gateway_readings_received_total") == 50, 10, "intake")
        gateway.kill()
        influx.start()
        with GatewayServer(tmp_path / "gw", env):
            assert_exactly(influx.url, readings)
    finally:
        influx.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_gateway_restarts_lose_nothing(
    influx: InfluxServer, gateway_env: dict, publisher: Publisher, tmp_path: Path, protocol: str
) -> None:
    readings = [reading(i) for i in range(600)]
    env = {**gateway_env, **influx.env(), "MQTT_PROTOCOL": protocol}
    gateway = GatewayServer(tmp_path / "gw", env).start()
    try:
        flow = threading.Thread(target=publish_steadily, args=(publisher, readings, 150))
        flow.start()
        wait_for(lambda: len(stored(influx.url)) > 100, 10, "the first writes")
        gateway.stop()  # SIGTERM: flush, ack, disconnect
        gateway.start()
        wait_for(lambda: len(stored(influx.url)) > 300, 10, "writes after the restart")
        gateway.kill()  # kill -9: whatever was unacknowledged comes again
        gateway.start()
        flow.join(20)
        publisher.close()
        assert_exactly(influx.url, readings)
        assert not gateway.deadletter_path.exists() or not gateway.deadletter_path.read_text()
    finally:
        gateway.stop()


# --- TLS, credentials, ACL ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_gateway_connects_over_tls_with_its_credentials(
    influx: InfluxServer, mosquitto_tls: SecureMosquittoServer, tmp_path: Path
) -> None:
    client_id = {"MQTT_CLIENT_ID": f"gateway-{uuid.uuid4().hex[:8]}"}
    env = {**influx.env(), **mosquitto_tls.env_for("gateway"), **client_id}
    with GatewayServer(tmp_path / "gw", env) as gateway:
        health = wait_for(
            lambda: (h := httpx.get(f"{gateway.url}/healthz")).status_code == 200 and h,
            15,
            "the gateway to connect over TLS",
        )
        assert health.json()["subscribed"] is True
        publisher = Publisher(
            mosquitto_tls.url_for("edge"), "home/power", ca_cert=str(mosquitto_tls.ca_path)
        )
        publisher.publish(to_payload(reading(0)), subtopic="meter1")  # the edge's one topic
        publisher.close()
        assert_exactly(influx.url, [reading(0)], timeout=15)
        assert mosquitto_tls.credentials["gateway"] not in gateway.tail(100)

    bad_password = uuid.uuid4().hex
    other_ca = tmp_path / "other-ca"
    subprocess.run([REPO_ROOT / "scripts" / "make-certs", other_ca, "IP:127.0.0.1"], check=True)
    refused = {
        "wrong password": mosquitto_tls.env_for("gateway")
        | {"MQTT_BROKER_URL": f"mqtts://gateway:{bad_password}@127.0.0.1:{mosquitto_tls.port}"},
        "anonymous": mosquitto_tls.env_for("gateway")
        | {"MQTT_BROKER_URL": f"mqtts://127.0.0.1:{mosquitto_tls.port}"},
        "plaintext": {"MQTT_BROKER_URL": mosquitto_tls.url_for("gateway").replace("mqtts", "mqtt")},
        "unknown CA": mosquitto_tls.env_for("gateway")
        | {"MQTT_TLS_CA_CERT": str(other_ca / "ca.crt")},
    }
    for case, broker_env in refused.items():
        with GatewayServer(tmp_path / case.replace(" ", "-"), {**env, **broker_env}) as gateway:
            wait_for(lambda: REFUSAL_LOG.search(gateway.tail(100)), 10, f"refusal: {case}")
            health = httpx.get(f"{gateway.url}/healthz")
            assert health.status_code == 503, case
            assert health.json()["broker_connected"] is False, case
            assert bad_password not in gateway.tail(100), "a password reached the log"


@pytest.mark.timeout(60)
def test_gateway_reconnects_and_resubscribes_when_the_broker_lost_its_session(
    influx: InfluxServer, names: dict[str, str], tmp_path: Path
) -> None:
    with MosquittoServer(tmp_path / "broker") as broker:
        env = {**influx.env(), **broker.env(), **names, "GATEWAY_FLUSH_SECONDS": "0.05"}
        with GatewayServer(tmp_path / "gw", env) as gateway:
            healthy = lambda: httpx.get(f"{gateway.url}/healthz").status_code == 200  # noqa: E731
            wait_for(healthy, 10, "connected")
            broker.stop()
            (broker.workdir / "mosquitto.db").unlink(missing_ok=True)  # sessions forgotten
            wait_for(lambda: not healthy(), 10, "the gateway to notice")
            broker.start()
            wait_for(healthy, 20, "reconnected and subscribed again")
            publisher = Publisher(broker.url, names["MQTT_TOPIC"])
            publisher.publish(to_payload(reading(0)))
            publisher.close()
            assert_exactly(influx.url, [reading(0)], timeout=10)
            assert gateway.tail(50).count("subscribing to") == 2


@pytest.mark.timeout(60)
def test_sigterm_flushes_acknowledges_and_disconnects(
    influx: InfluxServer, gateway_env: dict, publisher: Publisher, tmp_path: Path
) -> None:
    readings = [reading(i) for i in range(50)]
    # Nothing would be written for 30 s on its own: only the shutdown can write it.
    slow = {"GATEWAY_FLUSH_SECONDS": "30", "GATEWAY_FLUSH_IDLE_SECONDS": "30"}
    env = {**gateway_env, **influx.env(), **slow}
    with GatewayServer(tmp_path / "gw", env) as gateway:
        for r in readings:
            publisher.publish(to_payload(r))
        publisher.close()
        wait_for(lambda: metric(gateway, "gateway_readings_received_total") == 50, 10, "intake")
        assert stored(influx.url) == []
        process = gateway.process
        gateway.stop()  # SIGTERM
        assert process is not None and process.returncode == 0
    assert_exactly(influx.url, readings, timeout=1)
    # Acknowledged before the disconnect: the broker has nothing to deliver again.
    with GatewayServer(tmp_path / "gw2", env) as again:
        wait_for(lambda: httpx.get(f"{again.url}/healthz").status_code == 200, 10, "connected")
        time.sleep(0.5)
        assert metric(again, "gateway_messages_received_total") == 0
