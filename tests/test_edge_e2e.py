"""End to end: simulator -> python -m edge -> TLS mosquitto -> python -m gateway -> InfluxDB ->
luigi DuckLoadDay, with a broker outage and a kill -9 of the edge during it.

The pipeline only archives days that are over, and the edge stamps readings with the real
time, so the luigi step runs under libfaketime one day ahead (`apt-get install faketime`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from test_edge_publisher import (
    REPO,
    edge_env,
    kill_left_over,
    private_broker,  # noqa: F401  (fixture)
    start_edge,
    start_simulator,
    stored,
    wait_for,
)

from contracts.mqtt import MqttSettings, make_client
from devstack.servers import free_port
from edge.outbox import Outbox

pytestmark = pytest.mark.timeout(300)
ZONE = "Asia/Tokyo"


def influx_points(url: str) -> list[dict[str, object]]:
    query = urllib.parse.urlencode(
        {"db": "home_energy", "epoch": "ms", "q": "SELECT * FROM power WHERE source = 'meter1'"}
    )
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=10) as resp:
        result = json.load(resp)["results"][0]
    if "series" not in result:
        return []
    series = result["series"][0]
    return [dict(zip(series["columns"], row, strict=True)) for row in series["values"]]


def point_times(url: str) -> set[int]:
    return {p["time"] for p in influx_points(url)}  # type: ignore[misc]


def start_gateway(broker, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        **broker.env_for("gateway"),
        "MQTT_CLIENT_ID": "gateway-e2e",
        "GATEWAY_API_PORT": str(free_port()),
        "GATEWAY_DEADLETTER_PATH": str(tmp_path / "deadletters.jsonl"),
        "GATEWAY_FLUSH_SECONDS": "0.5",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=REPO,
        env=env,
        stdout=(tmp_path / "gateway.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def attempt_takeover(broker, user: str, client_id: str) -> None:
    """Connect as `user` with `client_id` and a clean session, then leave."""
    settings = MqttSettings.from_url(
        broker.url_for(user), ca_cert=str(broker.ca_path), client_id=client_id
    )
    client = make_client(settings)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: rc.is_failure or connected.set()
    client.loop_start()
    try:
        assert connected.wait(10), "the broker refused the takeover connection itself"
    finally:
        client.disconnect()
        client.loop_stop()


def test_nothing_the_edge_deleted_is_lost_after_a_client_id_takeover(
    influx,
    private_broker,  # noqa: F811
    tmp_path,
) -> None:
    # The gateway is down; the broker holds what the edge handed over (and deleted). The
    # edge's password, used with the gateway's client id and a clean session, must not make
    # the broker throw that queue away.
    outbox, log = tmp_path / "outbox.db", tmp_path / "edge.log"
    gateway_log = tmp_path / "gateway.log"
    simulator, pty = start_simulator(tmp_path)
    gateway = start_gateway(private_broker, tmp_path)
    edge = None
    try:
        wait_for(lambda: "subscribing" in gateway_log.read_text(), 30, "the gateway to subscribe")
        edge = start_edge(edge_env(private_broker, pty, outbox), log)
        wait_for(lambda: len(influx_points(influx.url)) >= 5, 60, f"points in InfluxDB ({log})")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(30) == 0
        _, before = stored(outbox)
        wait_for(
            lambda: stored(outbox)[1] >= before + 20 and stored(outbox)[0] == 0,
            30,
            "readings delivered to the broker (and deleted) while the gateway is down",
        )
        for client_id in ("gateway-e2e", "gateway"):  # its MQTT_CLIENT_ID, its user name
            attempt_takeover(private_broker, "edge", client_id)
        gateway = start_gateway(private_broker, tmp_path)
        wait_for(lambda: stored(outbox)[1] >= before + 30, 30, "readings after the attempt")
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(15) == 0
        # Readings 1..last, each its own ts; those still in the outbox were not deleted.
        last = stored(outbox)[1]
        with Outbox(outbox) as box:
            kept = {round(r.ts.timestamp() * 1000) for r in box.oldest(last)}
        deleted = last - len(kept)
        wait_for(
            lambda: len(point_times(influx.url) - kept) >= deleted,
            60,
            f"the {deleted} deleted readings in InfluxDB (see {gateway_log})",
        )
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    finally:
        kill_left_over(edge, gateway, simulator)
    # Every point is one of the edge's readings (1..last), so all `deleted` of them are there.
    assert len(point_times(influx.url) - kept) == deleted
    assert len(point_times(influx.url)) <= last


@pytest.mark.skipif(
    not shutil.which("faketime"), reason="needs libfaketime: apt-get install faketime"
)
def test_meter_to_duckdb_exactly_once_through_an_outage(influx, private_broker, tmp_path) -> None:  # noqa: F811
    outbox, log = tmp_path / "outbox.db", tmp_path / "edge.log"
    simulator, pty = start_simulator(tmp_path)
    gateway = start_gateway(private_broker, tmp_path)
    edge = None
    try:
        # The gateway's persistent session must exist before the first publish, as it does in
        # production; a broker keeps nothing for a subscriber it has never seen.
        gateway_log = tmp_path / "gateway.log"
        wait_for(lambda: "subscribing" in gateway_log.read_text(), 30, "the gateway to subscribe")
        time.sleep(0.5)
        env = edge_env(private_broker, pty, outbox)
        edge = start_edge(env, log)
        wait_for(lambda: len(influx_points(influx.url)) >= 5, 60, f"points in InfluxDB ({log})")

        private_broker.stop()
        _, before = stored(outbox)
        wait_for(lambda: stored(outbox)[1] >= before + 8, 15, "readings during the outage")
        edge.send_signal(signal.SIGKILL)
        edge.wait(10)
        private_broker.start()
        edge = start_edge(env, log)
        wait_for(lambda: stored(outbox)[1] >= before + 15, 30, "readings after the restart")
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(15) == 0
        wait_for(lambda: stored(outbox)[0] == 0, 30, "an empty outbox")
        last = stored(outbox)[1]
        wait_for(lambda: len(influx_points(influx.url)) >= last, 60, f"{last} points in InfluxDB")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    finally:
        kill_left_over(edge, gateway, simulator)

    points = influx_points(influx.url)
    assert len(points) == last  # every reading once: seq 1..last, one point each
    assert all(p["instant_power_w"] is not None and p["energy_import_kwh"] for p in points)

    # Archive the day the readings fell on, as cron would the next day.
    times = [datetime.fromtimestamp(p["time"] / 1000, UTC) for p in points]  # type: ignore[operator]
    day = min(times).astimezone(ZoneInfo(ZONE)).date()
    in_day = [
        p for p, t in zip(points, times, strict=True) if t.astimezone(ZoneInfo(ZONE)).date() == day
    ]
    duckdb_path = tmp_path / "duckdb" / "home_energy.duckdb"
    pipeline_env = {
        **os.environ,
        "INFLUX_URL": influx.url,
        "DUCKDB_PATH": str(duckdb_path),
        "PARQUET_BASE_DIR": str(tmp_path / "parquet"),
        "TZ": ZONE,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    luigi = Path(sys.executable).with_name("luigi")
    command = [str(luigi), "--module", "pipeline", "DuckLoadDay", "--date", day.isoformat()]
    result = subprocess.run(
        ["faketime", "-f", "+1d", *command, "--local-scheduler"],
        cwd=REPO,
        env=pipeline_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with duckdb.connect(str(duckdb_path), read_only=True) as db:
        rows, distinct, power = db.execute(
            "SELECT count(*), count(DISTINCT ts_utc), sum(instant_power_w) "
            "FROM raw_meter_readings WHERE source = 'meter1'"
        ).fetchone()
    assert rows == distinct == len(in_day)
    assert power == pytest.approx(sum(p["instant_power_w"] for p in in_day))  # type: ignore[misc]
