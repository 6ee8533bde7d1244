"""The daily marts written back to InfluxDB for Grafana (design.md section 9).

Measurements, tag `source`, float fields only (a type conflict refuses a whole batch):

- `energy_daily` (fct_daily_energy) and `energy_cost_daily` (fct_daily_cost): one point per
  source and local day, at the day's local midnight.
- `energy_forecast` (fct_energy_forecast): one point per source, granularity (a second tag:
  the day forecast and the first half hour share a target time) and target time. A target is
  forecast again every day; the latest forecast of it is the one kept, so after a day is over
  its point holds the day-ahead forecast, and a rerun of an older day never overwrites a newer
  forecast with an older one.

A point is (measurement, tags, time): writing a day again replaces its points with the same
values, so reruns are idempotent. The cost and forecast tables are written by other stages and
are read only where they exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, tzinfo

import duckdb
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from requests import RequestException

from contracts.influx import InfluxSettings, make_client
from pipeline.database import has_table
from pipeline.days import day_window_utc
from pipeline.errors import PipelineError

logger = logging.getLogger("luigi-interface")

DAILY_MARTS = {
    # measurement: (table, fields)
    "energy_daily": (
        "fct_daily_energy",
        ("daily_energy_kwh", "daily_export_kwh", "peak_w", "coverage_ratio", "reading_count"),
    ),
    "energy_cost_daily": (
        "fct_daily_cost",
        (
            "energy_kwh",
            "export_kwh",
            "energy_charge_yen",
            "fuel_adjustment_yen",
            "renewable_surcharge_yen",
            "export_credit_yen",
            "cost_yen",
        ),
    ),
}
FORECAST_MEASUREMENT = "energy_forecast"
FORECAST_TABLE = "fct_energy_forecast"
FORECAST_FIELDS = ("value_kwh", "lower_kwh", "upper_kwh", "horizon", "level")
WRITE_BATCH = 5000
# Days whose points are held in memory at once (a month of 10 meters is ~15,000 points).
DAYS_PER_WRITE = 31


def write_back(
    con: duckdb.DuckDBPyConnection, days: Iterable[date], zone: tzinfo, settings: InfluxSettings
) -> int:
    """Write the days' points a month at a time, newest first; the number of points."""
    days = sorted(set(days), reverse=True)
    written = 0
    for i in range(0, len(days), DAYS_PER_WRITE):
        points = mart_points(con, days[i : i + DAYS_PER_WRITE], zone)
        if not write_points(settings, points):
            break  # the rest is older still: beyond the retention policy too
        written += len(points)
    return written


def mart_points(con: duckdb.DuckDBPyConnection, days: Iterable[date], zone: tzinfo) -> list[dict]:
    """Every point the given local days contribute, as influxdb-python point dicts."""
    days = sorted(set(days))
    points = []
    for measurement, (table, fields) in DAILY_MARTS.items():
        if not has_table(con, table):
            logger.info("%s not in the warehouse: no %s points", table, measurement)
            continue
        rows = con.execute(
            f"select source, date_jst, {', '.join(fields)} from {table} "
            "where list_contains(?, date_jst) order by source, date_jst",
            [days],
        ).fetchall()
        points += [
            _point(measurement, {"source": source}, _midnight_ms(day, zone), fields, values)
            for source, day, *values in rows
        ]
    if has_table(con, FORECAST_TABLE):
        points += _forecast_points(con, days)
    else:
        logger.info("%s not in the warehouse: no %s points", FORECAST_TABLE, FORECAST_MEASUREMENT)
    return [p for p in points if p["fields"]]


def _forecast_points(con: duckdb.DuckDBPyConnection, days: list[date]) -> list[dict]:
    rows = con.execute(
        f"""
        with latest as (
            select source, granularity, target_start_utc, max(made_for) as made_for
            from {FORECAST_TABLE}
            group by all
        )
        select source, granularity, epoch_ms(target_start_utc), {", ".join(FORECAST_FIELDS)}
        from {FORECAST_TABLE}
        join latest using (source, granularity, target_start_utc, made_for)
        where list_contains(?, made_for)
        order by source, granularity, target_start_utc
        """,
        [days],
    ).fetchall()
    return [
        _point(
            FORECAST_MEASUREMENT,
            {"source": source, "granularity": granularity},
            time_ms,
            FORECAST_FIELDS,
            values,
        )
        for source, granularity, time_ms, *values in rows
    ]


def _point(
    measurement: str, tags: dict[str, str], time_ms: int, names: Iterable[str], values: list
) -> dict:
    # NULL stays absent (never 0.0); every number is written as a float.
    fields = {n: float(v) for n, v in zip(names, values, strict=True) if v is not None}
    return {"measurement": measurement, "tags": tags, "time": time_ms, "fields": fields}


def _midnight_ms(day: date, zone: tzinfo) -> int:
    return int(day_window_utc(day, zone)[0].timestamp() * 1000)


def write_points(settings: InfluxSettings, points: list[dict]) -> bool:
    """Write the points; False when InfluxDB dropped some as older than its retention policy.

    A failure is one line naming InfluxDB's answer (the task reruns). Newest first: when
    InfluxDB drops a batch's points beyond its retention policy, every later batch is older
    still and would be dropped too, so the write can stop there.
    """
    client = make_client(settings)
    newest_first = sorted(points, key=lambda p: p["time"], reverse=True)
    try:
        client.write_points(newest_first, time_precision="ms", batch_size=WRITE_BATCH)
    except InfluxDBClientError as e:
        if "beyond retention policy" in str(e.content):
            # InfluxDB keeps what its retention allows and drops the older days: not an error,
            # Grafana simply cannot show days InfluxDB no longer keeps.
            logger.warning("InfluxDB dropped points older than its retention policy: %s", e)
            return False
        raise PipelineError(f"InfluxDB refused the marts at {settings.url}: {e}") from None
    except (InfluxDBServerError, RequestException) as e:
        raise PipelineError(f"InfluxDB at {settings.url} did not take the marts: {e}") from None
    finally:
        client.close()
    return True
