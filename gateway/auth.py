"""Who may read: machines with `GATEWAY_API_TOKEN`, people signed in with `GATEWAY_UI_PASSWORD`.

A person signs in once on a small form and gets a session cookie (HttpOnly, SameSite=Strict,
Secure behind https). The cookie is signed, not stored: `<expiry>.<nonce>.<mac>`, an HMAC keyed
by the password's hash, so sessions survive a restart of the gateway and changing the password
ends every session. Nothing secret is logged: not the password, its hash, the token or a cookie.

The hash format is `pbkdf2_sha256$<iterations>$<salt>$<hash>` (base64, hashlib.pbkdf2_hmac);
`python -m gateway.auth` reads a password and prints its hash for `GATEWAY_UI_PASSWORD_HASH`.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
import hmac
import html
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from gateway.metrics import GatewayMetrics

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000
# A plain GATEWAY_UI_PASSWORD is hashed with this salt, so its session key is the same after a
# restart; the hash never leaves the process.
PLAIN_PASSWORD_SALT = b"home-energy-gateway-ui"
COOKIE_NAME = "home_energy_session"
WRONG_PASSWORD_DELAY_S = 1.0
MAX_FORM_BYTES = 4096
PUBLIC_PATHS = frozenset({"/healthz", "/login"})
PUBLIC_PREFIXES = ("/static/",)
# Pages a person opens: without a session they lead to the sign-in form, not to a 401.
SIGN_IN_REDIRECTS = frozenset({"/"})


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    _scheme, iterations, salt, expected = encoded.split("$")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    return hmac.compare_digest(digest, _unb64(expected))


def check_hash_format(encoded: str) -> None:
    parts = encoded.split("$")
    try:
        ok = len(parts) == 4 and parts[0] == SCHEME and int(parts[1]) > 0
        ok = ok and bool(_unb64(parts[2])) and len(_unb64(parts[3])) == 32
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            "GATEWAY_UI_PASSWORD_HASH must look like pbkdf2_sha256$<iterations>$<salt>$<hash> "
            "(print one with `python -m gateway.auth`)"
        )


@dataclass(frozen=True)
class LoginSettings:
    password_hash: str = field(repr=False)
    cookie_secure: str = "auto"  # auto: Secure when the request came over https
    session_days: float = 30.0

    def __repr__(self) -> str:
        return f"LoginSettings(secure_cookie={self.cookie_secure}, days={self.session_days})"


class Sessions:
    """Signed session cookies: issued at sign-in, checked on every request."""

    def __init__(self, login: LoginSettings) -> None:
        self.login = login
        self._key = hashlib.sha256(b"session\0" + login.password_hash.encode()).digest()

    def issue(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.login.session_days * 86400)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        return int(body.split(".")[0]) > (now or time.time())

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def install_auth(
    app: FastAPI, token: str | None, login: LoginSettings | None, metrics: GatewayMetrics
) -> None:
    """Every route but the public ones asks for the bearer token or a session cookie.

    With neither a token nor a password configured, everything stays open (loopback default).
    """
    if not token and not login:
        return
    expected = f"Bearer {token}".encode() if token else None
    sessions = Sessions(login) if login else None

    @app.middleware("http")
    async def require_credentials(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if expected and secrets.compare_digest(given, expected):
            return await call_next(request)
        if sessions and sessions.valid(request.cookies.get(COOKIE_NAME)):
            return await call_next(request)
        if sessions and path in SIGN_IN_REDIRECTS and request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return JSONResponse(
            {"detail": "sign in at /login, or send Authorization: Bearer <GATEWAY_API_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    if sessions:
        _add_login_routes(app, sessions, metrics)


def _add_login_routes(app: FastAPI, sessions: Sessions, metrics: GatewayMetrics) -> None:
    # One password check at a time, each wrong one followed by the delay: guessing is slow
    # however many requests come at once.
    checking = asyncio.Lock()

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form() -> HTMLResponse:
        return HTMLResponse(_login_page(""))

    @app.post("/login", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        body = await request.body()
        fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"))
        password = (fields.get("password") or [""])[0]
        async with checking:
            right = await run_in_threadpool(verify_password, password, sessions.login.password_hash)
            if not right:
                metrics.login_failures.inc()
                await asyncio.sleep(WRONG_PASSWORD_DELAY_S)
        if not right:
            return HTMLResponse(_login_page("Wrong password. Try again."), status_code=401)
        metrics.logins.inc()
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            sessions.issue(),
            max_age=int(sessions.login.session_days * 86400),
            httponly=True,
            samesite="strict",
            secure=_secure(sessions.login, request),
            path="/",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def sign_out() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response


def _secure(login: LoginSettings, request: Request) -> bool:
    if login.cookie_secure == "auto":
        return request.url.scheme == "https"
    return login.cookie_secure == "true"


def _login_page(message: str) -> str:
    notice = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/page.css">
<title>Sign in: home energy</title></head>
<body><main class="signin"><h1>Home energy</h1>
<form method="post" action="/login">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required autofocus>
<button type="submit">Sign in</button>{notice}
</form></main></body></html>
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main() -> int:
    """Print the hash of a password read from the terminal (or one line of stdin)."""
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if not password:
        print("empty password refused", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
