"""The household's page at `/`, the JSON behind it under `/api/`, the reports under `/reports/`.

Numbers come from the published DuckDB file (gateway.warehouse_reader sees every publish),
today's power from InfluxDB through the API's own queries. A warehouse that is missing, locked
or being replaced answers 503 with a state the page shows ("no data yet", "updating"), never 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import duckdb
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from contracts.message import SOURCE_PATTERN
from gateway import charts, insights
from gateway.auth import LoginSettings
from gateway.queries import INFLUX_ERRORS, ReadingQueries
from gateway.warehouse_reader import (
    BEING_REPLACED,
    NO_DATA,
    UPDATING,
    WarehouseReader,
    WarehouseUnavailable,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
RETRY_AFTER_S = "10"
TODAY_EVERY_S = 300  # a day's curve in 288 points
REPORT_PATHS = {
    "daily": re.compile(r"\d{4}-\d{2}-\d{2}\.html"),
    "period": re.compile(rf"{SOURCE_PATTERN.pattern}/\d{{4}}-\d{{2}}-\d{{2}}\.html"),
}


@dataclass(frozen=True)
class PageSettings:
    warehouse: WarehouseReader
    reports_dir: Path
    zone: ZoneInfo
    login: LoginSettings | None


def _report_link(reports_dir: Path, kind: str, name: str) -> str | None:
    """The page's link to a report file, when the pipeline has written it."""
    return f"/reports/{kind}/{name}" if (reports_dir / kind / name).is_file() else None


def add_page(app: FastAPI, page: PageSettings, queries: ReadingQueries) -> None:
    index_html = (STATIC_DIR / "index.html").read_text()
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(WarehouseUnavailable)
    def unavailable(_request: Any, exc: WarehouseUnavailable) -> JSONResponse:
        return JSONResponse(
            {"state": exc.state, "message": exc.message, "detail": exc.detail},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER_S},
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-store"})

    @app.get("/api/sources", summary="Sources with data in the published warehouse")
    def sources() -> dict:
        with page.warehouse.cursor() as con:
            return {"sources": _read(lambda: _sources(con, page))}

    @app.get("/api/overview", summary="Every number and chart of the page for one source and day")
    def overview(
        source: Annotated[str | None, Query(pattern=f"^{SOURCE_PATTERN.pattern}$")] = None,
        day: Annotated[date | None, Query(description="local day; default the newest")] = None,
    ) -> dict:
        with page.warehouse.cursor() as con:
            return _read(lambda: _overview(con, page, source, day))

    @app.get("/api/today", summary="Today's power from InfluxDB, newest reading and a chart")
    def today(
        source: Annotated[str | None, Query(pattern=f"^{SOURCE_PATTERN.pattern}$")] = None,
    ) -> dict:
        now = datetime.now(page.zone)
        midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=page.zone)
        try:
            latest = queries.latest(source)
            points = queries.downsampled(source, midnight, now, TODAY_EVERY_S)
        except INFLUX_ERRORS as exc:  # InfluxDB down: the page says so, the rest still works
            raise HTTPException(503, f"InfluxDB query failed: {str(exc)[:200]}") from exc
        return {
            "source": source,
            "latest": latest[0] if latest else None,
            "chart": charts.power_today(points, "container"),
        }

    @app.get("/reports/", response_class=HTMLResponse, summary="The reports written so far")
    def reports_index() -> HTMLResponse:
        return HTMLResponse(_reports_index(page.reports_dir))

    @app.get("/reports/{kind}/{name:path}", summary="One report file")
    def report(kind: str, name: str) -> FileResponse:
        pattern = REPORT_PATHS.get(kind)
        folder = (page.reports_dir / kind).resolve()
        path = (folder / name).resolve()
        known = pattern is not None and pattern.fullmatch(name) and path.is_relative_to(folder)
        if not known or not path.is_file():
            raise HTTPException(404, "no such report")
        return FileResponse(path, media_type="text/html")


def _overview(
    con: duckdb.DuckDBPyConnection, page: PageSettings, source: str | None, day: date | None
) -> dict:
    known = _sources(con, page)
    if not known:
        raise WarehouseUnavailable(
            NO_DATA, "No data yet: the pipeline has not computed any daily costs."
        )
    source = source or known[0]
    if source not in known:
        raise HTTPException(404, f"no data for source {source!r}; known: {', '.join(known)}")
    newest = insights.latest_day(con, source)
    day = day or newest
    yesterday = datetime.now(page.zone).date() - timedelta(days=1)
    result = insights.overview(con, source, day)
    period = result["billing"]
    result |= {
        "state": "ok",
        "sources": known,
        "newest_day": newest.isoformat(),
        "age_days": (yesterday - newest).days,
        "charts": _charts(result),
        "reports": {
            "daily": _report_link(page.reports_dir, "daily", f"{day}.html"),
            "period": period
            and _report_link(page.reports_dir, "period", f"{source}/{period['period_start']}.html"),
        },
    }
    return result


def _sources(con: duckdb.DuckDBPyConnection, page: PageSettings) -> list[str]:
    return page.warehouse.remember("sources", lambda: insights.sources(con))


def _charts(result: dict) -> dict:
    specs = {}
    if result["profile"]:
        specs["profile"] = charts.profile(result["profile"], "container")
    if result["days"]:
        specs["days"] = charts.recent_days(result["days"], result["forecast"] or [], "container")
    if result["base_load"]:
        specs["base_load"] = charts.base_load(result["base_load"], "container")
    return specs


def _read(run: Any) -> Any:
    """A query's result; DuckDB failing mid-read (a file being replaced) is 'updating'."""
    try:
        return run()
    except duckdb.Error as exc:
        raise WarehouseUnavailable(
            UPDATING, BEING_REPLACED, str(exc).splitlines()[0][:200]
        ) from exc


def _reports_index(reports_dir: Path) -> str:
    daily = sorted((reports_dir / "daily").glob("*.html"), reverse=True)
    period = sorted((reports_dir / "period").glob("*/*.html"), reverse=True)
    items = [f'<li><a href="/reports/daily/{p.name}">{p.stem}</a></li>' for p in daily]
    items += [
        f'<li><a href="/reports/period/{p.parent.name}/{p.name}">{p.parent.name}: billing period '
        f"from {p.stem}</a></li>"
        for p in period
        if REPORT_PATHS["period"].fullmatch(f"{p.parent.name}/{p.name}")
    ]
    body = "\n".join(items) or "<li>No reports yet: the pipeline writes one each night.</li>"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/page.css"><title>Reports: home energy</title></head>
<body><main><h1>Reports</h1><p><a href="/">Back to the page</a></p>
<ul>{body}</ul></main></body></html>
"""
