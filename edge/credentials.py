"""The B-route ID and password: from the environment or files, checked, never printed."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The utility issues a 32-character ID and a 12-character password (ASCII letters/digits).
_ID = re.compile(r"[0-9A-Za-z]{32}")
_PASSWORD = re.compile(r"[\x21-\x7e]{1,32}")


class CredentialsError(ValueError):
    """Missing or malformed B-route credentials; the message never contains the secret."""


@dataclass(frozen=True)
class Credentials:
    route_b_id: str = field(repr=False)
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.route_b_id):
            raise CredentialsError(
                f"B-route ID must be 32 ASCII letters or digits (got {len(self.route_b_id)} "
                "characters)"
            )
        if not _PASSWORD.fullmatch(self.password):
            raise CredentialsError(
                f"B-route password must be 1-32 printable ASCII characters without spaces "
                f"(got {len(self.password)} characters)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """`BROUTE_ID`/`BROUTE_PASSWORD`, or the files named by `BROUTE_ID_FILE`/`..._FILE`."""
        env = os.environ if env is None else env
        return cls(_secret(env, "BROUTE_ID"), _secret(env, "BROUTE_PASSWORD"))


def _secret(env: Mapping[str, str], name: str) -> str:
    if env.get(name):
        return env[name].strip()
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise CredentialsError(f"{name}_FILE {path}: {exc.strerror}") from None
    raise CredentialsError(f"set {name} or {name}_FILE")
