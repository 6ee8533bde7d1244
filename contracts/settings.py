"""Reading settings from the environment: one parser per kind, one error style.

Each process reads its environment once at start (the gateway's and the edge's `from_env`,
the pipeline's `luigi.Config` classes) and passes the values down. A bad value stops the
process with one line that names the variable and the value, e.g.
`GATEWAY_API_PORT must be an integer, got 'http'`. An empty variable counts as unset, so a
compose file's `X: ${X:-}` keeps the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

N = TypeVar("N", int, float)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingError(ValueError):
    """A variable with a value its reader cannot use; the message names both."""


def alternatives(choices: Sequence[str]) -> str:
    """`a, b or c`: how an error lists the accepted values."""
    return " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)


def parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None


def parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number, got {raw!r}") from None


def parse_bool(name: str, raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise SettingError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


def parse_choice(name: str, raw: str, choices: Sequence[str]) -> str:
    if raw not in choices:
        raise SettingError(f"{name} must be {alternatives(choices)}, got {raw!r}")
    return raw


def parse_zone(name: str, raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise SettingError(f"{name} {raw!r} is not a time zone (e.g. Asia/Tokyo)") from None


class Environment:
    """Typed reads of environment variables (`os.environ` unless a mapping is given)."""

    def __init__(self, variables: Mapping[str, str] | None = None) -> None:
        self.variables = os.environ if variables is None else variables

    def optional(self, name: str) -> str | None:
        """The variable's value; None when it is unset or empty."""
        return self.variables.get(name) or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def path(self, name: str, default: Path | str) -> Path:
        return Path(self.text(name, str(default)))

    def integer(self, name: str, default: int, *, zero: bool = False) -> int:
        """A positive integer (or zero, when `zero` is allowed)."""
        raw = self.optional(name)
        return default if raw is None else _checked(name, raw, parse_int(name, raw), zero)

    def number(self, name: str, default: float, *, zero: bool = False) -> float:
        """A positive number (or zero, when `zero` is allowed)."""
        raw = self.optional(name)
        return default if raw is None else _checked(name, raw, parse_float(name, raw), zero)

    def flag(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        return default if raw is None else parse_bool(name, raw)

    def choice(
        self, name: str, default: str, choices: Sequence[str], *, upper: bool = False
    ) -> str:
        """One of `choices`; with `upper`, the value is upper-cased first (info is INFO)."""
        raw = self.text(name, default)
        return parse_choice(name, raw.upper() if upper else raw, choices)

    def log_level(self, name: str) -> str:
        """A logging level name, in any case; INFO when unset."""
        return self.choice(name, "INFO", LOG_LEVELS, upper=True)

    def zone(self, name: str, default: str) -> ZoneInfo:
        return parse_zone(name, self.text(name, default))


def _checked(name: str, raw: str, value: N, zero: bool) -> N:
    if not (value >= 0 if zero else value > 0):
        raise SettingError(f"{name} must be {'zero or more' if zero else 'positive'}, got {raw!r}")
    return value


# Defaults of settings that more than one process reads (the pipeline writes, the gateway reads).
DUCKDB_PATH_DEFAULT = "data/duckdb/home_energy.duckdb"
PUBLISH_MODES = ("swap", "alternate", "inplace")  # the first is the default
REPORTS_DIR_DEFAULT = "data/reports"
TZ_DEFAULT = "Asia/Tokyo"
