"""The InfluxDB side of the contract: schema names and one way to open a client.

Works against InfluxDB 1.x (username/password or none) and InfluxDB 2 through its v1
compatibility API (a token, sent as `Authorization: Token ...`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from influxdb import InfluxDBClient

SOURCE_TAG = "source"


@dataclass(frozen=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    database: str = "home_energy"
    measurement: str = "power"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    verify_ssl: bool = True

    @classmethod
    def from_env(cls, **overrides: object) -> InfluxSettings:
        """Settings from the contract's environment variables; unset ones keep the defaults."""
        env = {
            "url": os.environ.get("INFLUX_URL"),
            "database": os.environ.get("INFLUX_BUCKET"),
            "measurement": os.environ.get("INFLUX_MEASUREMENT"),
            "token": os.environ.get("INFLUX_TOKEN"),
            "username": os.environ.get("INFLUX_USERNAME"),
            "password": os.environ.get("INFLUX_PASSWORD"),
        }
        values = {k: v for k, v in env.items() if v} | overrides
        return cls(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        # Never let a token or password reach a log line through repr().
        secret = "***" if (self.token or self.password) else None
        return f"InfluxSettings(url={self.url!r}, database={self.database!r}, auth={secret})"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (measurements come from configuration)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_client(settings: InfluxSettings) -> InfluxDBClient:
    """A client with TLS verification on and a timeout, whatever the library's defaults."""
    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"INFLUX_URL must be http(s)://host[:port], got {settings.url!r}")
    headers = {"Authorization": f"Token {settings.token}"} if settings.token else None
    return InfluxDBClient(
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 8086),
        path=parts.path.rstrip("/"),
        ssl=parts.scheme == "https",
        verify_ssl=settings.verify_ssl,
        timeout=settings.timeout_s,
        retries=1,
        username=settings.username,
        password=settings.password,
        database=settings.database,
        headers=headers,
    )
