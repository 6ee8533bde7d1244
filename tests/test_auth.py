"""Sign-in parts: the password hash format, its command, session cookies, bad configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contracts.settings import Environment
from gateway.auth import LoginSettings, Sessions, hash_password, verify_password
from gateway.settings import login_settings


def login(monkeypatch: pytest.MonkeyPatch, **env: str) -> LoginSettings | None:
    for name in ("GATEWAY_UI_PASSWORD", "GATEWAY_UI_PASSWORD_HASH", "GATEWAY_COOKIE_SECURE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return login_settings(Environment())


def test_the_hash_command_prints_a_hash_the_gateway_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "gateway.auth"],
        input="tea for two\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert printed.startswith("pbkdf2_sha256$600000$") and "tea" not in printed
    assert verify_password("tea for two", printed) and not verify_password("tea for one", printed)
    settings = login(monkeypatch, GATEWAY_UI_PASSWORD_HASH=printed)
    assert settings is not None and settings.password_hash == printed
    assert printed not in repr(settings)


def test_sessions_survive_a_restart_and_end_with_a_new_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = Sessions(login(monkeypatch, GATEWAY_UI_PASSWORD="open sesame"))
    cookie = first.issue(now=1000.0)
    restarted = Sessions(login(monkeypatch, GATEWAY_UI_PASSWORD="open sesame"))
    assert restarted.valid(cookie, now=1001.0)
    assert not restarted.valid(cookie, now=1000.0 + 31 * 86400)  # expired after 30 days
    changed = Sessions(login(monkeypatch, GATEWAY_UI_PASSWORD="new password"))
    assert not changed.valid(cookie, now=1001.0)
    expires, nonce, mac = cookie.split(".")
    assert not restarted.valid(f"{int(expires) + 86400}.{nonce}.{mac}", now=1001.0)  # tampered
    for junk in ("", "abc", "1.2", "a.b.c.d", None):
        assert not restarted.valid(junk)


def test_no_password_means_no_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    assert login(monkeypatch) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_COOKIE_SECURE": "maybe"}, "GATEWAY_COOKIE_SECURE must be auto, true or false"),
        ({"GATEWAY_SESSION_DAYS": "0"}, "GATEWAY_SESSION_DAYS must be positive"),
    ],
)
def test_bad_session_settings_are_refused(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=message):
        login(monkeypatch, GATEWAY_UI_PASSWORD="x", **env)


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")
