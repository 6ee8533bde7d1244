"""luigid as `python -m scheduler` starts it: its `[cors]` settings, read once, still apply."""

from __future__ import annotations

import urllib.request

from devstack.servers import LuigidServer

ORIGIN = "http://grafana.local:3000"


class LuigidWithCors(LuigidServer):
    def config_text(self) -> str:
        return super().config_text() + f'\n[cors]\nenabled = true\nallowed_origins = ["{ORIGIN}"]\n'


def preflight(url: str, origin: str) -> str | None:
    request = urllib.request.Request(
        f"{url}/api/task_list",
        method="OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers.get("Access-Control-Allow-Origin")


def test_cors_settings_apply_to_every_request(tmp_path) -> None:
    with LuigidWithCors(tmp_path / "luigid") as luigid:
        for _ in range(2):  # the settings object is shared between requests
            assert preflight(luigid.url, ORIGIN) == ORIGIN
            assert preflight(luigid.url, "http://elsewhere.example") is None
