"""The gateway's own settings (design.md section 7 plus the tuning knobs), from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from contracts.homeassistant import DISCOVERY_PREFIX

DEFAULT_CLIENT_ID = "home-energy-gateway"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _positive(name: str, default: float, kind: type = float) -> float:
    raw = _env(name, str(default))
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = _env(name, str(default).lower())
    if raw.lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


@dataclass(frozen=True)
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

    @classmethod
    def from_env(cls) -> GatewaySettings:
        batch_size = int(_positive("GATEWAY_BATCH_SIZE", cls.batch_size, int))
        return cls(
            api_host=_env("GATEWAY_API_HOST", cls.api_host),
            api_port=int(_positive("GATEWAY_API_PORT", cls.api_port, int)),
            api_token=os.environ.get("GATEWAY_API_TOKEN") or None,
            deadletter_path=Path(_env("GATEWAY_DEADLETTER_PATH", str(cls.deadletter_path))),
            deadletter_max_bytes=int(
                _positive("GATEWAY_DEADLETTER_MAX_BYTES", cls.deadletter_max_bytes, int)
            ),
            batch_size=batch_size,
            flush_seconds=_positive("GATEWAY_FLUSH_SECONDS", cls.flush_seconds),
            flush_idle_seconds=_positive("GATEWAY_FLUSH_IDLE_SECONDS", cls.flush_idle_seconds),
            buffer_readings=max(
                2 * batch_size, int(_positive("GATEWAY_BUFFER_READINGS", cls.buffer_readings, int))
            ),
            retry_max_seconds=_positive("GATEWAY_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            shutdown_seconds=_positive("GATEWAY_SHUTDOWN_SECONDS", cls.shutdown_seconds),
            homeassistant=_flag("HOMEASSISTANT_ENABLED", cls.homeassistant),
            homeassistant_prefix=_env("HOMEASSISTANT_DISCOVERY_PREFIX", cls.homeassistant_prefix),
            homeassistant_power_seconds=_positive(
                "GATEWAY_HOMEASSISTANT_POWER_SECONDS", cls.homeassistant_power_seconds
            ),
        )

    def __repr__(self) -> str:
        token = "***" if self.api_token else None
        return (
            f"GatewaySettings(api={self.api_host}:{self.api_port}, token={token}, "
            f"deadletters={self.deadletter_path}, batch_size={self.batch_size}, "
            f"flush_seconds={self.flush_seconds}, buffer_readings={self.buffer_readings}, "
            f"homeassistant={self.homeassistant})"
        )
