#!/usr/bin/env python3
"""Page benchmark: the data routes' latency while a publish runs, and the page's render time.

Starts its own influxd, mosquitto and `python -m gateway` (loopback, free ports, a temporary
folder it removes) over a warehouse of two years of ten sources (devstack.sample_warehouse:
the insights tables of the contract, ~350,000 half hours), then:

  routes    GET /api/overview (a random source each time), /api/sources and /api/today, one
            after the other, while another process publishes the warehouse again and again
            (the pipeline's swap: copy, rebuild the tables, verify, rename): p50/p95/max per
            route and over all of them (goal: p95 < 100 ms), and how many publishes the
            requests overlapped
  render    the page in headless Chromium, signed in: from navigation to the numbers and every
            chart drawn (the page's own performance.now() at that moment), N loads
            (goal: < 1.5 s)

    .venv/bin/python scripts/bench_page.py
    .venv/bin/python scripts/bench_page.py --requests 600 --loads 15 --days 730 --sources 10
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contracts.influx import InfluxSettings  # noqa: E402
from devstack.sample_warehouse import publish_sample_warehouse, sample_days  # noqa: E402
from devstack.servers import GatewayServer, InfluxServer, MosquittoServer  # noqa: E402
from pipeline.seed import seed  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "bench-" + uuid.uuid4().hex[:8]
TOKEN = "bench-" + uuid.uuid4().hex
ZONE = ZoneInfo("Asia/Tokyo")
ROUTE_GOAL_MS = 100
RENDER_GOAL_MS = 1500

PUBLISHER = """
import sys, time
from datetime import date
from pathlib import Path
from devstack.sample_warehouse import publish_sample_warehouse
live, first, last, count = Path(sys.argv[1]), date.fromisoformat(sys.argv[2]), \\
    date.fromisoformat(sys.argv[3]), int(sys.argv[4])
sources = [f"meter{i}" for i in range(1, count + 1)]
n = 0
while True:
    n += 1
    publish_sample_warehouse(live, sources, first, last, scale=1 + n / 100)
    print(n, flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):6.1f} ms  p95 {percentile(values, 0.95):6.1f} ms  "
        f"max {max(values):6.1f} ms  ({len(values)} requests)"
    )


def time_routes(url: str, sources: list[str], requests: int) -> dict[str, list[float]]:
    routes = {
        "/api/overview": lambda: {"source": random.choice(sources)},
        "/api/sources": dict,
        "/api/today": lambda: {"source": random.choice(sources)},
    }
    timings: dict[str, list[float]] = {route: [] for route in routes}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for n in range(requests):
            route = list(routes)[n % len(routes)]
            started = time.perf_counter()
            answer = api.get(route, params=routes[route](), timeout=30)
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code != 200:
                raise RuntimeError(f"{route} answered {answer.status_code}: {answer.text[:200]}")
            timings[route].append(elapsed)
    return timings


def time_renders(url: str, loads: int) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(url + "/login")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "form button").click()
        results = []
        for _ in range(loads + 1):  # the first load fills the browser's cache: not counted
            driver.get(url + "/")
            deadline = time.monotonic() + 30
            while not (ms := driver.execute_script("return document.body.dataset.renderedMs")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the page did not render in 30 s")
                time.sleep(0.05)
            if driver.execute_script("return document.body.dataset.state") != "ok":
                raise RuntimeError("the page did not show the warehouse")
            results.append(float(ms))
        return results[1:]
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    sources = [f"meter{i}" for i in range(1, args.sources + 1)]
    yesterday = datetime.now(ZONE).date() - timedelta(days=1)
    first, last = sample_days(yesterday, args.days)
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        work = Path(tmp)
        live = work / "duckdb" / "home_energy.duckdb"
        started = time.perf_counter()
        publish_sample_warehouse(live, sources, first, last)
        build_s = time.perf_counter() - started
        size_mb = live.stat().st_size / 1e6
        print(
            f"warehouse: {args.days} days x {args.sources} sources, {size_mb:.0f} MB, "
            f"built and published in {build_s:.1f} s",
            flush=True,
        )
        with (
            InfluxServer(work / "influxd") as influx,
            MosquittoServer(work / "mosquitto") as broker,
        ):
            influx.query("CREATE DATABASE home_energy")
            # Today so far at one reading per 10 s per source, for /api/today's curve.
            midnight = datetime.combine(datetime.now(ZONE).date(), datetime.min.time(), ZONE)
            today = int((datetime.now(ZONE) - midnight) / timedelta(seconds=10))
            written = seed(
                InfluxSettings(url=influx.url),
                start=midnight,
                interval=timedelta(seconds=10),
                count=today,
                sources=sources,
                tz=str(ZONE),
            )
            print(f"influxd: today so far, {written:,} readings", flush=True)
            env = {
                **influx.env(),
                **broker.env(),
                "DUCKDB_PATH": str(live),
                "REPORTS_DIR": str(work / "reports"),
                "GATEWAY_UI_PASSWORD": PASSWORD,
                "GATEWAY_API_TOKEN": TOKEN,
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
            with GatewayServer(work / "gateway", env) as gateway:
                time_routes(gateway.url, sources, 30)  # warm: the first open of the file
                publisher = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        PUBLISHER,
                        str(live),
                        str(first),
                        str(last),
                        str(args.sources),
                    ],
                    cwd=REPO,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    timings = time_routes(gateway.url, sources, args.requests)
                finally:
                    publisher.kill()
                    published = publisher.communicate()[0].split()
                renders = time_renders(gateway.url, args.loads)
    everything = [t for values in timings.values() for t in values]
    print(
        f"\nroutes while publishing ({len(published)} publishes completed during the run, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    for route, values in timings.items():
        print(f"  {route:14s} {figures(values)}")
    p95 = percentile(everything, 0.95)
    verdict = "OK" if p95 < ROUTE_GOAL_MS else "MISSED"
    print(f"  {'all':14s} {figures(everything)}  goal p95 < {ROUTE_GOAL_MS} ms: {verdict}")
    render_p50, render_max = percentile(renders, 0.5), max(renders)
    verdict = "OK" if render_max < RENDER_GOAL_MS else "MISSED"
    print(
        f"\npage fully rendered in headless Chromium ({len(renders)} loads): "
        f"median {render_p50:.0f} ms, max {render_max:.0f} ms  "
        f"goal < {RENDER_GOAL_MS} ms: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
