"""The HTTP API: health, the latest readings, downsampled history, Prometheus metrics, and
the household's page (gateway.page).

Every route but /healthz, the sign-in form and static files asks for
`Authorization: Bearer <GATEWAY_API_TOKEN>` or a signed-in person's session cookie when a
token or a password is configured (the OpenAPI page too: it describes the data); see
gateway.auth.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import PlainTextResponse

from contracts.message import SOURCE_PATTERN, format_ts
from gateway.auth import install_auth
from gateway.ingest import Gateway
from gateway.page import PageSettings, add_page
from gateway.queries import EARLIEST_QUERY_TIME, INFLUX_ERRORS, LATEST_QUERY_TIME, ReadingQueries

EVERY_PATTERN = re.compile(r"([1-9][0-9]{0,6})([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Ten years: a wider bucket tells nothing more (InfluxDB refuses any past 292 years).
MAX_EVERY_S = 3650 * UNIT_SECONDS["d"]
MAX_POINTS_PER_SOURCE = 10_000
DEFAULT_RANGE = timedelta(days=1)

SourceParam = Annotated[
    str | None,
    Query(
        pattern=f"^{SOURCE_PATTERN.pattern}$",
        description="A source name; all sources when absent.",
    ),
]


def create_app(
    gateway: Gateway,
    queries: ReadingQueries,
    token: str | None,
    page: PageSettings | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Home energy gateway",
        description="Smart-meter readings from MQTT into InfluxDB (design.md sections 1 and 2).",
    )

    install_auth(app, token, page.login if page else None, gateway.metrics)

    @app.get("/healthz", summary="Broker connected, InfluxDB reachable, age of the last reading")
    def healthz(response: Response) -> dict:
        status = health(gateway, queries)
        if not status["healthy"]:
            response.status_code = 503
        return status

    @app.get("/api/latest", summary="The newest reading of each source")
    def latest(source: SourceParam = None) -> dict:
        return {"points": _query(lambda: queries.latest(source))}

    @app.get("/api/readings", summary="Readings downsampled in InfluxDB")
    def readings(
        source: SourceParam = None,
        start: Annotated[
            datetime | None, Query(description="RFC 3339 with offset; default end - 1 day")
        ] = None,
        end: Annotated[
            datetime | None, Query(description="RFC 3339 with offset; default now")
        ] = None,
        every: Annotated[
            str, Query(description="Interval: a number and s, m, h or d, e.g. 5m")
        ] = "1m",
    ) -> dict:
        end = _query_time("end", end) if end else datetime.now(UTC)
        start = _query_time("start", start or end - DEFAULT_RANGE)
        every_s = _every_seconds(every)
        if start >= end:
            raise HTTPException(422, "start must be before end")
        if (end - start).total_seconds() / every_s > MAX_POINTS_PER_SOURCE:
            raise HTTPException(
                422, f"range/every gives more than {MAX_POINTS_PER_SOURCE} points; widen every"
            )
        points = _query(lambda: queries.downsampled(source, start, end, every_s))
        return {
            "source": source,
            "start": format_ts(start),
            "end": format_ts(end),
            "every": every,
            "points": points,
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    def metrics() -> str:
        return gateway.metrics.render()

    if page:
        add_page(app, page, queries)
    return app


def health(gateway: Gateway, queries: ReadingQueries) -> dict:
    influx = queries.reachable()
    age = time.time() - gateway.last_reading_at if gateway.last_reading_at else None
    return {
        "healthy": gateway.broker_connected and gateway.subscribed and influx and gateway.influx_ok,
        "broker_connected": gateway.broker_connected,
        "subscribed": gateway.subscribed,
        "influx_reachable": influx,
        "influx_writes_ok": gateway.influx_ok,
        "last_reading_age_s": round(age, 3) if age is not None else None,
        "buffer_readings": gateway.buffer.depth,
    }


def _query_time(name: str, value: datetime) -> datetime:
    """`value` in UTC, or a 422 saying why InfluxDB could not be asked about it."""
    if value.utcoffset() is None:
        raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2025-12-17T00:00:00Z")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+23:59 is before year 1 in UTC
        raise HTTPException(422, f"{name} is out of range in UTC (years 1 to 9999)") from None
    if not EARLIEST_QUERY_TIME <= utc <= LATEST_QUERY_TIME:
        raise HTTPException(
            422,
            f"{name} must be between {format_ts(EARLIEST_QUERY_TIME)} and "
            f"{format_ts(LATEST_QUERY_TIME)} (InfluxDB's time range), got {format_ts(utc)}",
        )
    return utc


def _every_seconds(every: str) -> int:
    match = EVERY_PATTERN.fullmatch(every)
    if not match:
        raise HTTPException(
            422, f"every must be a number and s, m, h or d (e.g. 5m), got {every!r}"
        )
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_EVERY_S:
        raise HTTPException(
            422, f"every must be at most {MAX_EVERY_S // UNIT_SECONDS['d']}d, got {every!r}"
        )
    return seconds


def _query(run: Callable[[], list[dict]]) -> list[dict]:
    try:
        return run()
    except INFLUX_ERRORS as exc:
        raise HTTPException(503, f"InfluxDB query failed: {str(exc)[:200]}") from exc
