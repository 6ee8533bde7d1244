"""End to end: simulator -> python -m edge -> TLS mosquitto -> python -m gateway -> InfluxDB ->
luigi, with a broker outage and a kill -9 of the edge during it, and with the edge off for three
days while the meter's clock moves on (its half-hour memory fills the gap).

The pipeline only archives days that are over, and the edge stamps readings with the real
time, so the luigi step runs under libfaketime one day ahead (`apt-get install faketime`).
For the downtime, the simulator and the first run of the edge live three days in the past
(libfaketime with a clock file); moving the file to +0 is three days passing for the meter.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from conftest import REPO, wait_for
from edge_harness import edge_env, kill_left_over, start_edge, start_simulator, stored

from contracts.message import parse_ts
from contracts.mqtt import MqttSettings, make_client
from devstack.secure_broker import SecureMosquittoServer
from devstack.servers import free_port
from edge.outbox import Outbox
from edge.recovery import RECOVERED_KEY, floor_half_hour
from edge.simulator import SimulatedMeter

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


def run_pipeline_tomorrow(
    influx_url: str, tmp_path: Path, task: str, days: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`luigi --module pipeline <task> --date <days>` one day ahead (today is then over)."""
    duckdb_path = tmp_path / "duckdb" / "home_energy.duckdb"
    pipeline_env = {
        **os.environ,
        "INFLUX_URL": influx_url,
        "DUCKDB_PATH": str(duckdb_path),
        "PARQUET_BASE_DIR": str(tmp_path / "parquet"),
        "TZ": ZONE,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    luigi = Path(sys.executable).with_name("luigi")
    command = [str(luigi), "--module", "pipeline", task, "--date", days, "--local-scheduler"]
    result = subprocess.run(
        ["faketime", "-f", "+1d", *command],
        cwd=REPO,
        env=pipeline_env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    return duckdb_path, result


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
    private_broker,
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
def test_meter_to_duckdb_exactly_once_through_an_outage(influx, private_broker, tmp_path) -> None:
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
        env["EDGE_RECOVERY_DAYS"] = "0"  # live readings only here; the memory is tested below
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
    duckdb_path, result = run_pipeline_tomorrow(
        influx.url, tmp_path, "DuckLoadDay", day.isoformat()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with duckdb.connect(str(duckdb_path), read_only=True) as db:
        rows, distinct, power = db.execute(
            "SELECT count(*), count(DISTINCT ts_utc), sum(instant_power_w) "
            "FROM raw_meter_readings WHERE source = 'meter1'"
        ).fetchone()
    assert rows == distinct == len(in_day)
    assert power == pytest.approx(sum(p["instant_power_w"] for p in in_day))  # type: ignore[misc]


# --- three days off: the meter's memory ------------------------------------------------------

FAKETIME_LIBS = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
METER = {"unit": "0.001", "digits": 8, "start_raw": 5_000_000}  # 5,000 kWh, 1 Wh steps


def faked(env: dict[str, str], clock: Path | str) -> dict[str, str]:
    """A process whose wall clock is the real one moved by an offset: the one in the file
    `clock`, read again on every call (the meter's clock changes while the simulator runs), or
    the fixed `clock` itself ("-3d")."""
    offset = (
        {"FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1"}
        if isinstance(clock, Path)
        # Read once: this libfaketime build is not thread-safe, and re-reading a file on every
        # clock call from each of the edge's threads is the one race a test should not have.
        else {"FAKETIME": clock}
    )
    return {
        **env,
        **offset,
        "LD_PRELOAD": str(FAKETIME_LIBS[0]),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@pytest.fixture
def broker_since_last_week(tmp_path: Path) -> Iterator[SecureMosquittoServer]:
    """deploy/mosquitto with certificates issued five days ago: an edge living three days in
    the past must find them valid."""
    broker = SecureMosquittoServer(tmp_path / "broker")
    broker.ca_path.parent.mkdir(parents=True)
    subprocess.run(
        [
            "faketime",
            "-f",
            "-5d",
            str(REPO / "scripts" / "make-certs"),
            str(broker.ca_path.parent),
            "IP:127.0.0.1",
            "DNS:localhost",
        ],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    with broker:
        yield broker


def watermark(outbox: Path) -> datetime | None:
    with Outbox(outbox) as box:
        text = box.state(RECOVERED_KEY)
    return parse_ts(text) if text else None


def caught_up(outbox: Path, now: datetime) -> bool:
    """The edge has published every half hour its read-back owes (60 s settle)."""
    mark = watermark(outbox)
    return mark is not None and mark >= floor_half_hour(now - timedelta(seconds=60))


def registers_logged(log_text: str) -> int:
    return sum(int(n) for n in re.findall(r"meter memory: (\d+) half-hour registers", log_text))


@pytest.mark.skipif(
    not shutil.which("faketime") or not FAKETIME_LIBS,
    reason="needs libfaketime: apt-get install faketime",
)
@pytest.mark.timeout(600)
def test_three_days_off_every_half_hour_from_the_meters_memory(
    influx,
    broker_since_last_week,
    tmp_path,
) -> None:
    broker = broker_since_last_week
    outbox, log = tmp_path / "outbox.db", tmp_path / "edge.log"
    clock_file = tmp_path / "meter-clock"
    clock_file.write_text("-3d\n")
    simulator, pty = start_simulator(
        tmp_path,
        "--unit",
        METER["unit"],
        "--digits",
        str(METER["digits"]),
        "--start-raw",
        str(METER["start_raw"]),
        env=faked({}, clock_file),
    )
    gateway = start_gateway(broker, tmp_path)
    edge = None
    env = {
        **edge_env(broker, pty, outbox),
        "EDGE_POLL_SECONDS": "0.5",
        "EDGE_RECOVERY_DAYS": "5",
        "EDGE_RECOVERY_REQUESTS_PER_MINUTE": "600",
        "EDGE_LOG_LEVEL": "INFO",
    }
    try:
        gateway_log = tmp_path / "gateway.log"
        wait_for(lambda: "subscribing" in gateway_log.read_text(), 30, "the gateway to subscribe")
        # Three days ago: the edge runs, reads back its first days and keeps up.
        edge = start_edge(faked(env, clock_file.read_text().strip()), log)
        past = lambda: datetime.now(UTC) - timedelta(days=3)  # noqa: E731
        wait_for(lambda: caught_up(outbox, past()), 60, f"the first read-back ({log})")
        time.sleep(2)  # live readings too
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(15) == 0
        off_mark = watermark(outbox)
        assert off_mark is not None
        off_at = past()
        # Three days pass for the meter; the Pi comes back (with the right time).
        clock_file.write_text("+0\n")
        phase_two = len(log.read_text())
        edge = start_edge(env, log)
        restart = datetime.now(UTC)
        wait_for(lambda: caught_up(outbox, datetime.now(UTC)), 120, f"the read-back ({log})")
        on_mark = watermark(outbox)
        wait_for(lambda: stored(outbox)[0] == 0, 60, "an empty outbox")
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(15) == 0
        wait_for(lambda: {floor_half_hour(on_mark)} <= register_times(influx.url), 60, "InfluxDB")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    finally:
        for proc in (edge, gateway, simulator):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(10)

    # Every half hour of the downtime, and only once: the read-back published each boundary
    # after the first run's watermark exactly once (the log counts every register stored).
    assert on_mark is not None
    owed = int((on_mark - off_mark) / timedelta(minutes=30))
    assert owed >= 3 * 48
    assert registers_logged(log.read_text()[phase_two:]) == owed
    points = {
        datetime.fromtimestamp(p["time"] / 1000, UTC): p  # type: ignore[operator]
        for p in influx_points(influx.url)
        if p["instant_power_w"] is None
    }
    boundaries = [off_mark + timedelta(minutes=30) * (i + 1) for i in range(owed)]
    assert all(b in points for b in boundaries)
    # ... each the meter's true energy between its neighbours (1 Wh steps).
    truth = SimulatedMeter(
        unit_kwh=Decimal(METER["unit"]), digits=METER["digits"], clock=lambda: time.time()
    )
    for a, b in itertools.pairwise(boundaries):
        measured = points[b]["energy_import_kwh"] - points[a]["energy_import_kwh"]  # type: ignore[operator]
        assert measured == pytest.approx(
            truth.energy_kwh(b.timestamp()) - truth.energy_kwh(a.timestamp()), abs=0.0021
        )

    # The pipeline's daily energy of the days the Pi was off equals the meter's consumption.
    zone = ZoneInfo(ZONE)
    first_day = off_at.astimezone(zone).date() + timedelta(days=1)
    last_day = restart.astimezone(zone).date() - timedelta(days=1)
    today = datetime.now(zone).date()
    span = f"{first_day - timedelta(days=1)}-{today + timedelta(days=1)}"  # end exclusive
    duckdb_path, result = run_pipeline_tomorrow(influx.url, tmp_path, "DbtBuild", span)
    assert result.returncode == 0, result.stderr[-3000:]
    with duckdb.connect(str(duckdb_path), read_only=True) as db:
        daily = dict(
            db.execute(
                "SELECT date_jst, daily_energy_kwh FROM fct_daily_energy "
                "WHERE source = 'meter1' AND date_jst BETWEEN ? AND ?",
                [first_day, last_day],
            ).fetchall()
        )
    assert len(daily) == (last_day - first_day).days + 1 >= 2
    for day, kwh in daily.items():
        start = datetime.combine(day, datetime.min.time(), zone).timestamp()
        true_kwh = truth.energy_kwh(start + 86_400) - truth.energy_kwh(start)
        assert kwh == pytest.approx(true_kwh, rel=0.001), day


def register_times(url: str) -> set[datetime]:
    return {
        datetime.fromtimestamp(p["time"] / 1000, UTC)  # type: ignore[operator]
        for p in influx_points(url)
        if p["instant_power_w"] is None
    }
