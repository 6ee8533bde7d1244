"""The gateway's settings: every variable `python -m gateway` reads, read once at start.

`GatewaySettings.from_env` is the gateway's one reader of the environment (README, Settings);
`gateway.__main__` passes the values down to the parts that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from contracts.homeassistant import DISCOVERY_PREFIX
from contracts.influx import InfluxSettings
from contracts.message import DEFAULT_SOURCE, source_setting
from contracts.mqtt import MqttSettings
from contracts.settings import (
    DUCKDB_PATH_DEFAULT,
    PUBLISH_MODES,
    REPORTS_DIR_DEFAULT,
    TZ_DEFAULT,
    Environment,
)
from gateway.auth import PLAIN_PASSWORD_SALT, LoginSettings, check_hash_format, hash_password

DEFAULT_CLIENT_ID = "home-energy-gateway"


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_token: str | None = None
    deadletter_path: Path = Path("data/gateway/deadletters.jsonl")
    deadletter_max_bytes: int = 10 * 1024 * 1024
    deadletter_backups: int = 5
    # A batch is written when it holds batch_size readings, when its oldest reading has
    # waited flush_seconds, or when nothing new has come for flush_idle_seconds.
    batch_size: int = 5000
    flush_seconds: float = 0.1
    flush_idle_seconds: float = 0.02
    # Readings held in memory, unacknowledged; when full, intake waits (the broker keeps
    # the rest). At least two batches, so one can be written while the next fills.
    buffer_readings: int = 50_000
    retry_max_seconds: float = 30.0
    shutdown_seconds: float = 10.0
    # Home Assistant's live power sensor (docs/home-assistant.md): off unless enabled; at most
    # one state per source this often.
    homeassistant: bool = False
    homeassistant_prefix: str = DISCOVERY_PREFIX
    homeassistant_power_seconds: float = 10.0
    # The connections and what the page reads.
    mqtt: MqttSettings
    influx: InfluxSettings
    source_default: str = DEFAULT_SOURCE
    duckdb_path: Path = Path(DUCKDB_PATH_DEFAULT)
    publish_mode: str = PUBLISH_MODES[0]
    reports_dir: Path = Path(REPORTS_DIR_DEFAULT)
    zone: ZoneInfo
    login: LoginSettings | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Environment) -> GatewaySettings:
        """Every setting from `env`; raises ValueError naming the variable and its bad value."""
        batch_size = env.integer("GATEWAY_BATCH_SIZE", cls.batch_size)
        return cls(
            api_host=env.text("GATEWAY_API_HOST", cls.api_host),
            api_port=env.integer("GATEWAY_API_PORT", cls.api_port),
            api_token=env.optional("GATEWAY_API_TOKEN"),
            deadletter_path=env.path("GATEWAY_DEADLETTER_PATH", cls.deadletter_path),
            deadletter_max_bytes=env.integer(
                "GATEWAY_DEADLETTER_MAX_BYTES", cls.deadletter_max_bytes
            ),
            batch_size=batch_size,
            flush_seconds=env.number("GATEWAY_FLUSH_SECONDS", cls.flush_seconds),
            flush_idle_seconds=env.number("GATEWAY_FLUSH_IDLE_SECONDS", cls.flush_idle_seconds),
            buffer_readings=max(
                2 * batch_size, env.integer("GATEWAY_BUFFER_READINGS", cls.buffer_readings)
            ),
            retry_max_seconds=env.number("GATEWAY_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            shutdown_seconds=env.number("GATEWAY_SHUTDOWN_SECONDS", cls.shutdown_seconds),
            homeassistant=env.flag("HOMEASSISTANT_ENABLED", cls.homeassistant),
            homeassistant_prefix=env.text(
                "HOMEASSISTANT_DISCOVERY_PREFIX", cls.homeassistant_prefix
            ),
            homeassistant_power_seconds=env.number(
                "GATEWAY_HOMEASSISTANT_POWER_SECONDS", cls.homeassistant_power_seconds
            ),
            mqtt=MqttSettings.from_env(env, default_client_id=DEFAULT_CLIENT_ID),
            influx=InfluxSettings.from_env(env),
            source_default=source_setting(env),
            duckdb_path=env.path("DUCKDB_PATH", cls.duckdb_path),
            publish_mode=env.choice("DUCKDB_PUBLISH_MODE", cls.publish_mode, PUBLISH_MODES),
            reports_dir=env.path("REPORTS_DIR", cls.reports_dir),
            zone=env.zone("TZ", TZ_DEFAULT),
            login=login_settings(env),
            log_level=env.log_level("GATEWAY_LOG_LEVEL"),
        )

    def __repr__(self) -> str:
        token = "***" if self.api_token else None
        return (
            f"GatewaySettings(api={self.api_host}:{self.api_port}, token={token}, "
            f"deadletters={self.deadletter_path}, batch_size={self.batch_size}, "
            f"flush_seconds={self.flush_seconds}, buffer_readings={self.buffer_readings}, "
            f"homeassistant={self.homeassistant})"
        )


def login_settings(env: Environment) -> LoginSettings | None:
    """From GATEWAY_UI_PASSWORD_HASH or GATEWAY_UI_PASSWORD; None when neither is set."""
    encoded = env.optional("GATEWAY_UI_PASSWORD_HASH")
    plain = env.optional("GATEWAY_UI_PASSWORD")
    if encoded:
        check_hash_format(encoded)
    elif plain:
        encoded = hash_password(plain, PLAIN_PASSWORD_SALT)
    else:
        return None
    return LoginSettings(
        encoded,
        env.choice("GATEWAY_COOKIE_SECURE", LoginSettings.cookie_secure, ("auto", "true", "false")),
        env.number("GATEWAY_SESSION_DAYS", LoginSettings.session_days),
    )
