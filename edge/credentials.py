"""The B-route ID and password: from the environment or files, checked, never printed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from contracts.settings import Environment

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
    def from_env(cls, env: Environment) -> Credentials:
        """`BROUTE_ID`/`BROUTE_PASSWORD`, or the files named by `BROUTE_ID_FILE`/`..._FILE`."""
        return cls(
            _secret("BROUTE_ID", env.optional("BROUTE_ID"), env.optional("BROUTE_ID_FILE")),
            _secret(
                "BROUTE_PASSWORD",
                env.optional("BROUTE_PASSWORD"),
                env.optional("BROUTE_PASSWORD_FILE"),
            ),
        )


def _secret(name: str, value: str | None, path: str | None) -> str:
    if value:
        return value.strip()
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise CredentialsError(f"{name}_FILE {path}: {exc.strerror}") from None
    raise CredentialsError(f"set {name} or {name}_FILE")
