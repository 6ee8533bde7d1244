"""Shared fixtures: real servers on free loopback ports, data in pytest's temporary folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from time import monotonic, sleep
from typing import TypeVar
from zoneinfo import ZoneInfo

import duckdb
import pytest

from devstack.secure_broker import SecureMosquittoServer
from devstack.servers import InfluxServer, LuigidServer, MosquittoServer, ensure_packages

# Tests that need one of these (directly or through another fixture) are marked `servers`;
# `pytest -m "not servers"` is the quick tier without them (and without the modules that
# mark themselves because they build dbt or start their own broker).
SERVER_FIXTURES = frozenset(
    {"influx_server", "mosquitto", "_mosquitto_tls_server", "private_broker", "luigid"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session", autouse=True)
def _server_packages() -> None:
    ensure_packages()


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    with InfluxServer(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture
def influx(influx_server: InfluxServer, monkeypatch: pytest.MonkeyPatch) -> InfluxServer:
    """The session's influxd with an empty `home_energy` database, and INFLUX_* set for it."""
    influx_server.query("DROP DATABASE home_energy")
    influx_server.query("CREATE DATABASE home_energy")
    for key, value in influx_server.env().items():
        monkeypatch.setenv(key, value)
    return influx_server


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    with MosquittoServer(tmp_path_factory.mktemp("mosquitto")) as server:
        yield server


@pytest.fixture(scope="session")
def _mosquitto_tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecureMosquittoServer]:
    with SecureMosquittoServer(tmp_path_factory.mktemp("mosquitto-tls")) as server:
        yield server


@pytest.fixture
def mosquitto_tls(_mosquitto_tls_server: SecureMosquittoServer) -> SecureMosquittoServer:
    """The repository's deploy/mosquitto broker: TLS only, users `edge` and `gateway`, ACL.

    Use `url_for(user)` / `env_for(user)` for MQTT_BROKER_URL and `ca_path` for MQTT_TLS_CA_CERT;
    see devstack/secure_broker.py. Shared by the session, but each test starts with no session
    kept for either user (the broker binds client ids to user names, one session a user).
    """
    _mosquitto_tls_server.discard_sessions()
    return _mosquitto_tls_server


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[SecureMosquittoServer]:
    """A broker of this test's own: it is stopped and started again mid-test."""
    with SecureMosquittoServer(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[LuigidServer]:
    with LuigidServer(tmp_path / "luigid") as server:
        yield server


class PipelineEnv:
    """A pipeline pointed at a test's own InfluxDB database, Parquet folder and DuckDB file."""

    def __init__(self, influx: InfluxServer, root: Path) -> None:
        self.influx = influx
        # Luigi's process lock (same command already running -> exit 4) kept per test, so
        # tests running the same command elsewhere on the machine don't refuse each other.
        self.lock_dir = root / "luigi-locks"
        self.parquet = root / "parquet"
        self.duckdb = root / "duckdb" / "home_energy.duckdb"
        self.env = {
            **influx.env(),
            "PARQUET_BASE_DIR": str(self.parquet),
            "DUCKDB_PATH": str(self.duckdb),
            "TZ": "Asia/Tokyo",
            "SOURCE_DEFAULT": "meter1",
        }

    def write(self, lines: list[str]) -> None:
        write_lines(self.influx, lines)

    def build(self, *tasks: object) -> bool:
        return build_here(*tasks)

    def command(self, *args: str) -> list[str]:
        """The real `luigi --module pipeline ...` command, or `python -m ...` for args '-m', ..."""
        if args[0] == "-m":
            return [sys.executable, *args]
        luigi = str(Path(sys.executable).with_name("luigi"))
        return [luigi, "--module", "pipeline", "--lock-pid-dir", str(self.lock_dir), *args]

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300):
        """Run a command from the repository and wait for it."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        return subprocess.run(
            self.command(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def spawn(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a command from the repository without waiting for it."""
        return subprocess.Popen(
            self.command(*args),
            env={**os.environ, **self.env, **(extra_env or {})},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `check` until it returns something true, and return that; fail after `timeout`."""
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        if result := check():
            return result
        sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fetch(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of a query on a DuckDB file, opened read-only."""
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def recent_days(n: int) -> list[date]:
    """The last n local days (Asia/Tokyo), oldest first: inside the late-data lookback."""
    from pipeline.days import local_today

    yesterday = local_today(ZoneInfo("Asia/Tokyo")) - timedelta(days=1)
    return [yesterday - timedelta(days=k) for k in range(n - 1, -1, -1)]


@contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A small real file system (a full disk is a real ENOSPC); skips where mounting is denied."""
    mount.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_disk(folder: Path, leave_bytes: int) -> Path:
    """A file taking all the free space of `folder`'s file system but `leave_bytes`."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    with filler.open("wb") as f:
        f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))
    return filler


# --- Readings as the gateway writes them into InfluxDB -------------------------------------

SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)
QUARTER_HOUR, HOUR = timedelta(minutes=15), timedelta(hours=1)


def power_lines(
    start: date,
    steps: Iterable[int],
    every: timedelta,
    *,
    source: str = "meter1",
    power_w: Callable[[int], float] | None = None,
    import_kwh: Callable[[int], float] | None = None,
    tz: str = "Asia/Tokyo",
) -> list[str]:
    """Line protocol (the gateway's `to_line`) for reading i of each i in `steps`, read
    i * `every` after `start` (a datetime, or a date: its local midnight in `tz`), with the
    fields `power_w(i)` and `import_kwh(i)`; a field without its function is not sent."""
    from contracts.message import Reading
    from gateway.influx_writer import to_line
    from pipeline.days import day_window_utc

    if not isinstance(start, datetime):
        start = day_window_utc(start, ZoneInfo(tz))[0]
    return [
        to_line(
            "power",
            Reading(
                ts=start + i * every,
                source=source,
                instant_power_w=power_w(i) if power_w else None,
                energy_import_kwh=import_kwh(i) if import_kwh else None,
            ),
        )
        for i in steps
    ]


def minute_lines(n: int, day: date, source: str = "meter1", tz: str = "Asia/Tokyo") -> list[str]:
    """`n` readings a minute apart from the local day's midnight: i W and i / 10 kWh."""
    return power_lines(
        day, range(n), MINUTE, source=source, power_w=float, import_kwh=lambda i: i / 10, tz=tz
    )


def quarter_hour_lines(
    day: date, source: str = "meter1", kw: float = 1.0, count: int = 96
) -> list[str]:
    """A constant load of `kw` read every 15 minutes from the local day's midnight (96: the
    day; 97: the midnight after it too), the register from 100 kWh."""
    return power_lines(
        day,
        range(count),
        QUARTER_HOUR,
        source=source,
        power_w=lambda i: kw * 1000,
        import_kwh=lambda i: 100 + kw * i / 4,
    )


def hourly_lines(day: date, source: str = "meter1", hours: int = 24) -> list[str]:
    """500 W read every hour from the local day's midnight, the register from 10 kWh."""
    return power_lines(
        day,
        range(hours),
        HOUR,
        source=source,
        power_w=lambda h: 500,
        import_kwh=lambda h: 10 + h / 2,
    )


def write_lines(influx: InfluxServer, lines: list[str]) -> None:
    """Line protocol at millisecond precision into its `home_energy` database."""
    req = urllib.request.Request(
        f"{influx.url}/write?db=home_energy&precision=ms", data="\n".join(lines).encode()
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


def build_here(*tasks: object) -> bool:
    """Run tasks in this process with a local scheduler; True when all succeeded."""
    import luigi
    from luigi.task_register import Register

    Register.clear_instance_cache()  # Config objects read the environment when made
    result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True)
    Register.clear_instance_cache()
    return result.scheduling_succeeded


@pytest.fixture
def pipeline_env(
    influx: InfluxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PipelineEnv:
    env = PipelineEnv(influx, tmp_path)
    for key, value in env.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)  # luigi.cfg is read from the working directory
    return env


# --- A warehouse with marts, built once by the real pipeline (outputs: Grafana, Home Assistant) --

MARTS_DAYS = [date(2025, 12, 15), date(2025, 12, 16), date(2025, 12, 17)]
MARTS_SOURCES = ("meter1", "meter.2")  # a dot: HA's object ids cannot hold one


@dataclass(frozen=True)
class MartsWarehouse:
    duckdb: Path
    env: dict[str, str]  # PARQUET_BASE_DIR, TZ, SOURCE_DEFAULT (DUCKDB_PATH is per test)
    days: list[date]
    sources: tuple[str, ...]

    def build(self, *tasks: object) -> bool:
        return build_here(*tasks)


@pytest.fixture(scope="session")
def marts_warehouse(
    influx_server: InfluxServer, tmp_path_factory: pytest.TempPathFactory
) -> MartsWarehouse:
    """Readings of two meters over three local days through DbtBuild and ForecastDay, plus
    contract-shaped rows for the insight tables the build leaves empty or has not (forecasts
    need two weeks of history)."""
    root = tmp_path_factory.mktemp("marts")
    influx_server.query("DROP DATABASE home_energy")
    influx_server.query("CREATE DATABASE home_energy")
    env = PipelineEnv(influx_server, root)
    env.write(_meter_lines(MARTS_DAYS[0], len(MARTS_DAYS) + 1))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.env.items():
            mp.setenv(key, value)
        mp.chdir(REPO)
        from pipeline.forecast_task import ForecastDay

        # Three days are too few to forecast: ForecastDay completes with an empty table.
        assert env.build(ForecastDay(date=ForecastDay.date.parse(",".join(map(str, MARTS_DAYS)))))
    with duckdb.connect(str(env.duckdb)) as con:
        _add_missing_insight_tables(con)
    shared = {k: v for k, v in env.env.items() if k in ("PARQUET_BASE_DIR", "TZ", "SOURCE_DEFAULT")}
    return MartsWarehouse(env.duckdb, shared, MARTS_DAYS, MARTS_SOURCES)


@pytest.fixture
def marts(
    marts_warehouse: MartsWarehouse,
    influx: InfluxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> MartsWarehouse:
    """The built warehouse copied for this test (its outputs' markers start empty), the env set
    for it and an empty InfluxDB database."""
    live = tmp_path / "duckdb" / marts_warehouse.duckdb.name
    live.parent.mkdir()
    shutil.copyfile(marts_warehouse.duckdb, live)
    for key, value in {**marts_warehouse.env, "DUCKDB_PATH": str(live)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    return MartsWarehouse(live, marts_warehouse.env, marts_warehouse.days, marts_warehouse.sources)


def _meter_lines(first: date, days: int) -> list[str]:
    """Readings every 15 minutes; each source and hour of the day draws its own power."""
    steps = range(96 * days)
    lines = []
    for n, source in enumerate(MARTS_SOURCES):
        watts = [300.0 + 100.0 * n + 40.0 * (i % 96 // 4 % 7) + 25.0 * (i // 96) for i in steps]
        kwh = list(accumulate((w / 4000 for w in watts), initial=1000.0 * (n + 1)))
        lines += power_lines(
            first,
            steps,
            QUARTER_HOUR,
            source=source,
            power_w=watts.__getitem__,
            import_kwh=kwh.__getitem__,
        )
    return lines


def _add_missing_insight_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The contract's cost, billing-period and forecast tables (HELPERS.md), derived from
    fct_daily_energy where the build made none or left them empty."""
    tables = {
        t
        for (t,) in con.execute("select table_name from information_schema.tables").fetchall()
        if con.execute(f'select count(*) from "{t}"').fetchone()[0]
    }
    if "fct_daily_cost" not in tables:
        con.execute(
            """
            create table fct_daily_cost as
            select source, date_jst, 'flat_31' as plan_id,
                   daily_energy_kwh as energy_kwh, daily_export_kwh as export_kwh,
                   daily_energy_kwh * 31.0 as energy_charge_yen,
                   daily_energy_kwh * -2.5 as fuel_adjustment_yen,
                   daily_energy_kwh * 3.49 as renewable_surcharge_yen,
                   0.0 as export_credit_yen,
                   daily_energy_kwh * (31.0 - 2.5 + 3.49) as cost_yen
            from fct_daily_energy
            """
        )
    if "fct_billing_period" not in tables:
        con.execute(
            """
            create table fct_billing_period as
            select source, date '2025-12-01' as period_start, date '2026-01-01' as period_end,
                   true as is_open, count(*) as days_with_data,
                   sum(cost_yen) + 1246.96 as cost_so_far_yen,
                   sum(cost_yen) / count(*) * 31 + 1246.96 as projected_total_yen
            from fct_daily_cost group by source
            """
        )
    if "fct_energy_forecast" not in tables:
        # Made for each day: the next 7 days and the next day's 48 half hours, so targets
        # overlap between consecutive days (the write-back keeps the latest forecast).
        con.execute("drop table if exists fct_energy_forecast")
        con.execute(
            """
            create table fct_energy_forecast as
            with made as (
                select source, date_jst as made_for, daily_energy_kwh as base from fct_daily_energy
            ), day_targets as (
                select source, made_for, 'day' as granularity, h as horizon,
                       made_for + h::integer as target_date_jst,
                       timezone('Asia/Tokyo', target_date_jst::timestamp) as target_start_utc,
                       base * (1 + 0.01 * h) as value_kwh
                from made, range(1, 8) as t(h)
            ), half_hour_targets as (
                select source, made_for, 'half_hour' as granularity, h as horizon,
                       made_for + 1 as target_date_jst,
                       timezone('Asia/Tokyo', (made_for + 1)::timestamp)
                           + to_minutes(30 * (h - 1)) as target_start_utc,
                       base / 48 * (0.5 + h / 48) as value_kwh
                from made, range(1, 49) as t(h)
            )
            select source, made_for, now() as made_at, granularity, target_start_utc,
                   target_date_jst, horizon, 'seasonal_naive' as model, value_kwh,
                   value_kwh * 0.8 as lower_kwh, value_kwh * 1.2 as upper_kwh, 80 as level
            from (select * from day_targets union all select * from half_hour_targets)
            """
        )
