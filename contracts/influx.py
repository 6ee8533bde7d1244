"""The InfluxDB side of the contract: schema names and one way to open a client.

Works against InfluxDB 1.x (username/password or none) and InfluxDB 2 through its v1
compatibility API (a token, sent as `Authorization: Token ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from influxdb import InfluxDBClient

from contracts.settings import Environment

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
    def from_env(cls, env: Environment) -> InfluxSettings:
        """The connection from the contract's variables (design.md section 7); unset: defaults.

        The pipeline reads the same names through `pipeline.config.influx` (luigi.cfg, the
        environment, flags), with these defaults.
        """
        return cls(
            url=env.text("INFLUX_URL", cls.url),
            database=env.text("INFLUX_BUCKET", cls.database),
            measurement=env.text("INFLUX_MEASUREMENT", cls.measurement),
            token=env.optional("INFLUX_TOKEN"),
            username=env.optional("INFLUX_USERNAME"),
            password=env.optional("INFLUX_PASSWORD"),
            verify_ssl=env.flag("INFLUX_VERIFY_SSL", cls.verify_ssl),
        )

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
