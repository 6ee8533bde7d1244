"""The household's page, in a real headless Chromium against a real gateway process.

The gateway runs as `python -m gateway` between the session's mosquitto and influxd, and reads a
DuckDB warehouse published the pipeline's way (devstack.sample_warehouse: the insights tables of
the contract, filled with sample rows until the dbt marts and ForecastDay build them). Every
number the page shows is compared with the same query on the same file.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import httpx
import pytest
from conftest import SECOND, power_lines, wait_for, write_lines
from selenium.webdriver.common.by import By

from devstack.sample_warehouse import (
    locked_by_another_process,
    publish_sample_warehouse,
    sample_days,
)
from devstack.servers import GatewayServer, InfluxServer, MosquittoServer, free_port
from pipeline.database import connect
from pipeline.publishing import Warehouse

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct horse " + uuid.uuid4().hex[:6]
TOKEN = "page-token-" + uuid.uuid4().hex
ZONE = ZoneInfo("Asia/Tokyo")
SOURCES = ["meter1", "meter2"]
DATA_ROUTES = (
    "/api/overview",
    "/api/sources",
    "/api/today",
    "/api/latest",
    "/api/readings",
    "/metrics",
    "/reports/",
    "/reports/daily/2026-01-01.html",
    "/docs",
    "/openapi.json",
)


def yesterday() -> date:
    return datetime.now(ZONE).date() - timedelta(days=1)


class Site:
    """A gateway serving the page over a warehouse the test publishes to."""

    def __init__(self, gateway: GatewayServer, live: Path, influx: InfluxServer) -> None:
        self.gateway = gateway
        self.live = live
        self.influx = influx
        self.url = gateway.url
        self.reports = live.parent.parent / "reports"

    def publish(self, scale: float) -> None:
        first, last = sample_days(yesterday(), 70)
        publish_sample_warehouse(self.live, SOURCES, first, last, scale=scale)

    def db(self) -> duckdb.DuckDBPyConnection:
        """The test's own read of the file; closed after each use, so it never pins a snapshot
        in DuckDB's per-path cache across the publishes this process makes."""
        return duckdb.connect(str(self.live), read_only=True)

    def token_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )


@pytest.fixture(scope="module")
def site(
    influx_server: InfluxServer,
    mosquitto: MosquittoServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    influx_server.query("CREATE DATABASE home_energy")
    twenty_s_ago = datetime.now(UTC) - 20 * SECOND
    write_lines(
        influx_server, power_lines(twenty_s_ago, range(20), SECOND, power_w=lambda i: 300 + i)
    )
    live = root / "duckdb" / "home_energy.duckdb"
    tag = uuid.uuid4().hex[:8]
    env = {
        **influx_server.env(),
        **mosquitto.env(),
        "MQTT_TOPIC": f"t{tag}/power",
        "MQTT_CLIENT_ID": f"gateway-{tag}",
        "DUCKDB_PATH": str(live),
        "REPORTS_DIR": str(root / "reports"),  # Site.reports
        "TZ": "Asia/Tokyo",
        "GATEWAY_UI_PASSWORD": PASSWORD,
        "GATEWAY_API_TOKEN": TOKEN,
    }
    with GatewayServer(root / "gateway", env) as gateway:
        site = Site(gateway, live, influx_server)
        site.publish(scale=1.0)
        yield site
    log = gateway.log_path.read_text()
    assert PASSWORD not in log and TOKEN not in log, "a secret reached the gateway's log"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/bootstrap)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def signed_in(browser, site: Site):
    """The browser with a session (an earlier test may have signed in already)."""
    if not browser.current_url.startswith(site.url):
        sign_in(browser, site)
    return browser


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Screenshots are kept as the test's artifacts in its temporary folder."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def sign_in(browser, site: Site) -> None:
    browser.get(site.url + "/")
    assert browser.current_url.endswith("/login"), "without a session / leads to the sign-in form"
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait_rendered(browser, renders=1)


def wait_rendered(browser, renders: int, timeout: float = 30) -> None:
    rendered = (
        "return document.body && document.body.dataset.ready === '1' "
        "&& Number(document.body.dataset.renders || 0) >= arguments[0]"
    )
    wait_for(lambda: browser.execute_script(rendered, renders), timeout, "the page to render")


def console_errors(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def shown_fields(browser) -> dict[str, tuple[str, str]]:
    """data-field -> (data-value, visible text) of every number the page shows."""
    return browser.execute_script(
        "const out = {}; for (const el of document.querySelectorAll('[data-field]')) "
        "{ if (el.offsetParent !== null) "
        "out[el.dataset.field] = [el.dataset.value, el.textContent]; } "
        "return out;"
    )


def js_round(value: float) -> int:
    return math.floor(value + 0.5)  # Math.round, not Python's round-half-even


FORMATS = {
    "kwh": lambda v: f"{v:.2f} kWh",
    "yen": lambda v: f"¥{js_round(v):,}",
    "w": lambda v: f"{js_round(v):,} W",
    "wday": lambda v: f"{'+' if v >= 0 else ''}{v:.1f} W/day",
    "int": lambda v: str(int(v)),
}


def expected_fields(con: duckdb.DuckDBPyConnection, source: str, day: date) -> dict:
    """Every number of the page, straight from DuckDB: field -> (value, kind)."""
    energy, cost = con.execute(
        "select energy_kwh, cost_yen from fct_daily_cost where source = ? and date_jst = ?",
        [source, day],
    ).fetchone()
    usual_kwh, usual_cost = con.execute(
        "select median(energy_kwh), median(cost_yen) from fct_daily_cost where source = ? "
        "and date_jst < ? and date_jst >= ? and dayofweek(date_jst) = dayofweek(?::date)",
        [source, day, day - timedelta(weeks=8), day],
    ).fetchone()
    period = con.execute(
        "select days_with_data, days_in_period, cost_so_far_yen, energy_kwh, projected_total_yen, "
        "period_start, period_end from fct_billing_period "
        "where source = ? and period_start <= ? and ? < period_end",
        [source, day, day],
    ).fetchone()
    base, trend = con.execute(
        "select base_load_w, base_load_trend_w_per_day from fct_daily_base_load "
        "where source = ? and date_jst = ?",
        [source, day],
    ).fetchone()
    return {
        "day.energy_kwh": (energy, "kwh"),
        "day.cost_yen": (cost, "yen"),
        "day.usual_kwh": (usual_kwh, "kwh"),
        "day.usual_cost_yen": (usual_cost, "yen"),
        "billing.days_with_data": (period[0], "int"),
        "billing.days_in_period": (period[1], "int"),
        "billing.cost_so_far_yen": (period[2], "yen"),
        "billing.energy_kwh": (period[3], "kwh"),
        "billing.projected_total_yen": (period[4], "yen"),
        "billing.period_start": (period[5].isoformat(), "date"),
        "billing.period_end": (period[6].isoformat(), "date"),
        "date": (day.isoformat(), "date"),
        "base.base_load_w": (base, "w"),
        "base.base_load_trend_w_per_day": (trend, "wday"),
        "day.vs_usual": (js_round(100 * (energy - usual_kwh) / usual_kwh), "percent"),
    }


def assert_page_equals_duckdb(browser, site: Site, source: str = "meter1") -> dict:
    day = yesterday()
    with site.db() as con:
        expected = expected_fields(con, source, day)
        reasons = [
            r
            for (r,) in con.execute(
                "select reason from fct_energy_findings where source = ? and date_jst > ? "
                "and date_jst <= ? order by observed_at desc, kind",
                [source, day - timedelta(days=7), day],
            ).fetchall()
        ]
    shown = shown_fields(browser)
    assert set(shown) - {"live.instant_power_w"} == set(expected), "a number went unchecked"
    for field, (value, kind) in expected.items():
        raw, text = shown[field]
        if kind == "date":
            assert raw == text == value, field
            continue
        if kind == "percent":
            assert int(raw) == value, field
            continue
        assert float(raw) == pytest.approx(value, rel=1e-12, abs=1e-9), field
        assert text == FORMATS[kind](float(raw)), field
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#findings .reason")] == reasons
    assert reasons, "the sample warehouse has findings to show"
    return expected


def assert_charts_drawn(browser) -> None:
    for chart in ("chart-profile", "chart-days", "chart-base", "chart-today"):
        marks = browser.execute_script(
            "const svg = document.querySelector('#' + arguments[0] + ' svg');"
            "return svg ? svg.querySelectorAll('path, rect, line, symbol').length : 0;",
            chart,
        )
        assert marks > 10, f"{chart} drew {marks} marks"


@pytest.mark.timeout(240)
def test_page_shows_duckdbs_numbers_and_follows_a_publish(browser, site: Site, shots: Path) -> None:
    site.publish(scale=1.0)
    sign_in(browser, site)
    browser.save_screenshot(str(shots / "page.png"))
    assert console_errors(browser) == []
    assert browser.execute_script("return document.body.dataset.state") == "ok"
    before = assert_page_equals_duckdb(browser, site)
    assert_charts_drawn(browser)
    live = browser.find_element(By.CSS_SELECTOR, '[data-field="live.instant_power_w"]')
    assert live.get_attribute("data-value") == "319" and live.text == "319 W"  # InfluxDB's newest

    site.publish(scale=2.0)  # the nightly run publishes while the page is open
    renders = int(browser.execute_script("return document.body.dataset.renders"))
    browser.find_element(By.ID, "refresh").click()
    wait_rendered(browser, renders + 1)
    after = assert_page_equals_duckdb(browser, site)
    assert after["day.energy_kwh"][0] == pytest.approx(2 * before["day.energy_kwh"][0])
    browser.refresh()
    wait_rendered(browser, 1)
    assert_page_equals_duckdb(browser, site)
    assert_charts_drawn(browser)
    browser.save_screenshot(str(shots / "after-publish.png"))
    assert console_errors(browser) == []


@pytest.mark.timeout(240)
def test_page_is_usable_at_a_phones_width_in_dark_mode(signed_in, site: Site, shots: Path) -> None:
    browser = signed_in
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True},
    )
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        browser.get(site.url + "/")
        wait_rendered(browser, 1)
        assert browser.execute_script("return window.innerWidth") == 375
        assert browser.execute_script("return document.scrollingElement.scrollWidth") <= 375
        background = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert background == "rgb(18, 20, 23)", "dark mode follows prefers-color-scheme"
        assert_charts_drawn(browser)
        widths = browser.execute_script(
            "return [...document.querySelectorAll('.chart svg')]"
            ".map(s => s.getBoundingClientRect().right)"
        )
        assert widths and max(widths) <= 375, widths
        browser.save_screenshot(str(shots / "phone-dark.png"))
        assert console_errors(browser) == []
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


@pytest.mark.timeout(240)
def test_page_says_when_data_is_stale_or_a_table_is_not_built_yet(
    signed_in, site: Site, shots: Path
) -> None:
    browser = signed_in
    first, last = sample_days(yesterday() - timedelta(days=3), 70)
    try:
        publish_sample_warehouse(site.live, SOURCES, first, last)
        with Warehouse(site.live).publishing() as path, connect(path) as con:
            con.execute("drop table fct_energy_forecast")  # ForecastDay has not run yet
        browser.get(site.url + "/")
        wait_rendered(browser, 1)
        stale = browser.find_element(By.ID, "stale")
        assert stale.is_displayed() and f"from {last}, 3 day(s) older" in stale.text
        missing = browser.find_element(By.CSS_SELECTOR, '[data-missing="forecast"]')
        assert missing.is_displayed() and missing.text == "No forecast yet."
        assert browser.find_element(By.CSS_SELECTOR, '[data-field="date"]').text == str(last)
        assert_charts_drawn(browser)  # the days chart without its forecast layer still draws
        browser.save_screenshot(str(shots / "stale.png"))
        assert console_errors(browser) == []
    finally:
        site.publish(scale=1.0)


@pytest.mark.timeout(120)
def test_without_a_session_or_token_every_data_route_is_401(site: Site) -> None:
    for path in DATA_ROUTES:
        answer = httpx.get(site.url + path)
        assert answer.status_code == 401, path
    page = httpx.get(site.url + "/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert httpx.get(site.url + "/healthz").status_code in (200, 503)  # public, either way
    with site.token_client() as api:
        assert api.get("/api/overview").status_code == 200
        assert api.get("/metrics").status_code == 200
    forged = {"home_energy_session": "99999999999.abc.def"}
    assert httpx.get(site.url + "/api/overview", cookies=forged).status_code == 401


@pytest.mark.timeout(120)
def test_sign_in_sets_a_strict_cookie_and_a_wrong_password_is_slow_and_counted(
    site: Site,
) -> None:
    def failures() -> float:
        with site.token_client() as api:
            text = api.get("/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("gateway_login_failures_total "))
        return float(line.split()[1])

    counted = failures()
    started = time.monotonic()
    wrong = httpx.post(site.url + "/login", data={"password": "guess"})
    assert time.monotonic() - started >= 1.0
    assert wrong.status_code == 401 and "Wrong password" in wrong.text
    assert "set-cookie" not in wrong.headers
    assert failures() == counted + 1

    right = httpx.post(site.url + "/login", data={"password": PASSWORD})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=strict" in flags and "secure" not in flags
    session = {"home_energy_session": right.cookies["home_energy_session"]}
    for path in ("/api/overview", "/api/sources", "/reports/", "/"):
        assert httpx.get(site.url + path, cookies=session).status_code == 200, path

    # The page links the day's report once the pipeline wrote it, and serves it signed in only.
    report = site.reports / "daily" / f"{yesterday()}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("<!doctype html><p>the report</p>")
    link = httpx.get(site.url + "/api/overview", cookies=session).json()["reports"]["daily"]
    assert link == f"/reports/daily/{yesterday()}.html"
    served = httpx.get(site.url + link, cookies=session)
    assert served.status_code == 200 and "the report" in served.text
    assert httpx.get(site.url + link).status_code == 401
    for bad in ("/reports/daily/..%2F..%2Fduckdb%2Fhome_energy.duckdb", "/reports/etc/x.html"):
        assert httpx.get(site.url + bad, cookies=session).status_code == 404, bad
    index = httpx.get(site.url + "/reports/", cookies=session)
    assert f'href="{link}"' in index.text

    behind_https = httpx.post(
        site.url + "/login", data={"password": PASSWORD}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "secure" in {p.strip().lower() for p in behind_https.headers["set-cookie"].split(";")}


@pytest.mark.timeout(240)
def test_missing_locked_or_broken_warehouse_shows_a_clear_state(
    signed_in, site: Site, shots: Path
) -> None:
    browser = signed_in
    aside = site.live.with_name("aside.duckdb")

    def check(state: str, words: str, shot: str) -> None:
        with site.token_client() as api:
            for path in ("/api/overview", "/api/sources"):
                answer = api.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["state"] == state
        browser.get(site.url + "/")
        wait_rendered(browser, 1)
        banner = browser.find_element(By.ID, "state")
        assert banner.is_displayed() and words in banner.text.lower(), banner.text
        assert browser.execute_script("return document.body.dataset.state") == state
        browser.save_screenshot(str(shots / f"{shot}.png"))

    os.replace(site.live, aside)
    try:
        check("no_data", "no data yet", "missing")
        site.live.write_bytes(b"\0" * 4096 + b"half of a copy")  # a file half-way in
        check("updating", "updating", "half-copied")
    finally:
        os.replace(aside, site.live)
    # Someone's duckdb shell holds DuckDB's write lock on the live file. The gateway's own
    # connection went with the broken file above, so that process gets the lock.
    with locked_by_another_process(site.live):
        check("updating", "lock", "locked")
    browser.get(site.url + "/")
    wait_rendered(browser, 1)
    assert browser.execute_script("return document.body.dataset.state") == "ok"
    errors = console_errors(browser)  # the 503s of the states above are expected, nothing else
    assert all("503" in e for e in errors), errors


@pytest.mark.timeout(120)
def test_influxdb_down_leaves_the_warehouse_part_working(
    site: Site, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {
        **mosquitto.env(),
        "INFLUX_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "INFLUX_TIMEOUT_S": "2",
        "MQTT_TOPIC": f"t{tag}/power",
        "MQTT_CLIENT_ID": f"gateway-{tag}",
        "DUCKDB_PATH": str(site.live),
        "GATEWAY_API_TOKEN": TOKEN,
    }
    with GatewayServer(tmp_path / "gateway", env) as gateway:
        api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {TOKEN}"})
        today = api.get("/api/today", timeout=30)
        assert today.status_code == 503 and "InfluxDB query failed" in today.json()["detail"]
        assert api.get("/api/overview", timeout=30).json()["state"] == "ok"
