"""Shared fixtures: real servers on free loopback ports, data in pytest's temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from devstack.secure_broker import SecureMosquittoServer
from devstack.servers import InfluxServer, LuigidServer, MosquittoServer, ensure_packages


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
        """Line protocol at millisecond precision into the `home_energy` database."""
        req = urllib.request.Request(
            f"{self.influx.url}/write?db=home_energy&precision=ms",
            data="\n".join(lines).encode(),
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204

    def build(self, *tasks: object) -> bool:
        """Run tasks in this process with a local scheduler; True when all succeeded."""
        import luigi
        from luigi.task_register import Register

        Register.clear_instance_cache()  # Config objects read the environment when made
        result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True)
        Register.clear_instance_cache()
        return result.scheduling_succeeded

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


def minute_lines(n: int, day: date, source: str = "meter1", tz: str = "Asia/Tokyo") -> list[str]:
    """Line protocol for `n` readings a minute apart from the local day's midnight."""
    from pipeline.days import day_window_utc

    start = int(day_window_utc(day, ZoneInfo(tz))[0].timestamp() * 1000)
    return [
        f"power,source={source} instant_power_w={i}.0,energy_import_kwh={i / 10} "
        f"{start + i * 60_000}"
        for i in range(n)
    ]


@pytest.fixture
def pipeline_env(
    influx: InfluxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PipelineEnv:
    env = PipelineEnv(influx, tmp_path)
    for key, value in env.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)  # luigi.cfg is read from the working directory
    return env
