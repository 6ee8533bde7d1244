"""The gateway's in-process parts: dead-letter rotation, the buffer's bounds, metrics text."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.message import Reading, Rejected
from contracts.settings import Environment
from gateway.buffer import Delivery, DeliveryBuffer
from gateway.deadletters import PAYLOAD_KEEP_BYTES, REJECTED_KEEP, DeadLetters
from gateway.influx_writer import escape_measurement, to_line
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

TS = datetime(2025, 12, 17, 3, 4, 5, 250000, tzinfo=UTC)


def delivery(mid: int, readings: int = 1) -> Delivery:
    r = Reading(ts=TS, source="m", instant_power_w=1.0)
    return Delivery(mid=mid, qos=1, connection=1, topic="home/power", readings=[r] * readings)


def test_deadletters_rotate_and_keep_every_line_readable(tmp_path: Path) -> None:
    path = tmp_path / "dl" / "deadletters.jsonl"
    letters = DeadLetters(path, max_bytes=2000, backups=2)
    for n in range(30):
        letters.add("home/power", f"payload {n}".encode(), f"reason {n}")
    letters.add("home/power", b"\xff" + b"x" * (PAYLOAD_KEEP_BYTES + 10), "big")
    letters.sync()
    letters.close()
    files = [path.with_name(path.name + ".2"), path.with_name(path.name + ".1"), path]
    assert all(f.exists() for f in files) and not path.with_name(path.name + ".3").exists()
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert all(f.stat().st_size <= 2000 for f in files[:2])
    assert [r["reason"] for r in records][-2:] == ["reason 29", "big"]
    big = records[-1]
    assert big["payload_bytes"] == PAYLOAD_KEEP_BYTES + 11
    assert big["payload"].startswith("\\xffxxx") and len(big["payload"]) == PAYLOAD_KEEP_BYTES + 3
    assert records[0]["topic"] == "home/power" and records[0]["time"].endswith("Z")


def test_a_dead_letter_line_is_bounded_whatever_arrives(tmp_path: Path) -> None:
    path = tmp_path / "deadletters.jsonl"
    letters = DeadLetters(path, max_bytes=10 * 1024 * 1024, backups=1)
    control_bytes = bytes(range(32)) * 8192  # 256 KiB that JSON escapes to 6 bytes a byte
    refused = [Rejected(f"element {i}: " + "why " * 1000, i, 0) for i in range(5000)]
    letters.add("home/power", control_bytes, "x" * 100_000, refused)
    letters.close()
    (line,) = path.read_bytes().splitlines()
    assert len(line) < 6 * PAYLOAD_KEEP_BYTES + (REJECTED_KEEP + 1) * 1100
    record = json.loads(line)
    assert record["payload"].encode() == control_bytes[:PAYLOAD_KEEP_BYTES]
    assert record["payload_bytes"] == len(control_bytes)
    assert record["payload_sha256"] == hashlib.sha256(control_bytes).hexdigest()
    assert record["rejected_count"] == 5000
    assert [r["index"] for r in record["rejected"]] == list(range(REJECTED_KEEP))
    assert record["rejected"][0]["reason"].startswith("element 0: why why")
    assert all(len(r["reason"]) <= 1000 for r in record["rejected"])
    assert len(record["reason"]) == 1000 and record["reason"].endswith("...")


def test_buffer_waits_when_full_and_gives_up_on_stop() -> None:
    buffer = DeliveryBuffer(max_readings=10, batch_size=4)
    stop = threading.Event()
    assert buffer.put(delivery(1, 6), stop)
    assert buffer.put(delivery(2, 4), stop)
    results: list[bool] = []
    blocked = threading.Thread(target=lambda: results.append(buffer.put(delivery(3), stop)))
    blocked.start()
    time.sleep(0.2)
    assert results == [] and buffer.depth == 10  # full: intake waits
    batch = buffer.take(max_wait_s=1, idle_s=1, stop=stop)
    assert [d.mid for d in batch] == [1]  # one delivery may exceed the batch size alone
    blocked.join(2)
    assert results == [True] and buffer.depth == 5
    assert [d.mid for d in buffer.take(1, 1, stop)] == [2]
    assert buffer.put(delivery(4, 9), stop)
    stop.set()
    assert not buffer.put(delivery(5, 2), stop)  # full and stopping: not taken, not acked


def test_buffer_flushes_a_quiet_partial_batch_after_idle() -> None:
    buffer = DeliveryBuffer(max_readings=100, batch_size=50)
    buffer.put(delivery(1), threading.Event())
    started = time.monotonic()
    assert [d.mid for d in buffer.take(max_wait_s=5, idle_s=0.05, stop=threading.Event())] == [1]
    assert time.monotonic() - started < 1


def test_lines_are_floats_at_ms_with_escaped_measurement() -> None:
    reading = Reading(ts=TS, source="m-1.a", instant_power_w=500, energy_import_kwh=1e20)
    line = to_line(escape_measurement("my power,x"), reading)
    assert line == (
        "my\\ power\\,x,source=m-1.a instant_power_w=500.0,energy_import_kwh=1e+20 1765940645250"
    )


def test_metrics_render_prometheus_text() -> None:
    metrics = GatewayMetrics()
    metrics.readings_written.inc(3)
    metrics.write_latency.observe(0.003)
    metrics.write_latency.observe(100)
    metrics.add_gauge("gateway_buffer_readings", "Buffered.", lambda: 7)
    text = metrics.render()
    assert "gateway_readings_written_total 3\n" in text
    assert 'gateway_write_latency_seconds_bucket{le="0.005"} 1\n' in text
    assert 'gateway_write_latency_seconds_bucket{le="+Inf"} 2\n' in text
    assert "gateway_write_latency_seconds_count 2\n" in text
    assert "# TYPE gateway_buffer_readings gauge\ngateway_buffer_readings 7\n" in text


@pytest.mark.parametrize("name", ["GATEWAY_BATCH_SIZE", "GATEWAY_FLUSH_SECONDS"])
def test_bad_tuning_values_are_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "-1")
    with pytest.raises(ValueError, match=name):
        GatewaySettings.from_env(Environment())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SOURCE_DEFAULT", "no/slash", "SOURCE_DEFAULT"),
        ("MQTT_BROKER_URL", "http://gateway:s3cret@broker", "mqtt:// or mqtts://"),
        ("GATEWAY_BATCH_SIZE", "many", "GATEWAY_BATCH_SIZE must be an integer"),
        ("HOMEASSISTANT_ENABLED", "yes", "HOMEASSISTANT_ENABLED must be true or false"),
        ("GATEWAY_HOMEASSISTANT_POWER_SECONDS", "0", "must be positive"),
        ("GATEWAY_UI_PASSWORD_HASH", "s3cret-not-a-hash", "GATEWAY_UI_PASSWORD_HASH must look"),
        (
            "DUCKDB_PUBLISH_MODE",
            "sometimes",
            "DUCKDB_PUBLISH_MODE must be swap, alternate or inplace",
        ),
    ],
)
def test_bad_configuration_stops_the_gateway_at_start(name: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "s3cret" not in result.stderr
