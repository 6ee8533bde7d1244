"""Shared fixtures: real servers on free loopback ports, data in pytest's temporary folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureMosquittoServer]:
    """The repository's deploy/mosquitto broker: TLS only, users `edge` and `gateway`, ACL.

    Use `url_for(user)` / `env_for(user)` for MQTT_BROKER_URL and `ca_path` for MQTT_TLS_CA_CERT;
    see devstack/secure_broker.py.
    """
    with SecureMosquittoServer(tmp_path_factory.mktemp("mosquitto-tls")) as server:
        yield server


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[LuigidServer]:
    with LuigidServer(tmp_path / "luigid") as server:
        yield server
