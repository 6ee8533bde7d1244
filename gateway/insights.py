"""The numbers of the household's page and of the reports, read from the published warehouse.

One function per section, each a query on the insights marts (design.md section 8, the table
contract in HELPERS.md). A table the pipeline has not built yet makes its section None, and the
page says so; nothing here raises for missing data.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

DAYS_SHOWN = 30
FINDING_DAYS = 7
# "The usual" for a day: the median of the same weekday over this many weeks before it.
USUAL_WEEKS = 8

INSIGHT_TABLES = (
    "fct_daily_cost",
    "fct_half_hourly_cost",
    "fct_billing_period",
    "fct_daily_base_load",
    "fct_energy_findings",
    "fct_energy_forecast",
)

Row = dict[str, Any]


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "select table_name from duckdb_tables() where table_name in "
        f"({', '.join('?' * len(INSIGHT_TABLES))})",
        list(INSIGHT_TABLES),
    ).fetchall()
    return {name for (name,) in rows}


def sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    if "fct_daily_cost" not in tables(con):
        return []
    rows = con.execute("select distinct source from fct_daily_cost order by 1").fetchall()
    return [s for (s,) in rows]


def latest_day(con: duckdb.DuckDBPyConnection, source: str) -> date | None:
    ((latest,),) = con.execute(
        "select max(date_jst) from fct_daily_cost where source = ?", [source]
    ).fetchall()
    return latest


def overview(con: duckdb.DuckDBPyConnection, source: str, day: date) -> dict[str, Any]:
    """Every section of the page for one source and local day (None where a table is missing)."""
    present = tables(con)
    sections = {
        "day": ("fct_daily_cost", day_summary),
        "profile": ("fct_half_hourly_cost", half_hourly_profile),
        "days": ("fct_daily_cost", recent_days),
        "forecast": ("fct_energy_forecast", daily_forecast),
        "billing": ("fct_billing_period", billing_period),
        "base_load": ("fct_daily_base_load", base_load),
        "findings": ("fct_energy_findings", findings),
    }
    result: dict[str, Any] = {"source": source, "date": day.isoformat()}
    for name, (table, read) in sections.items():
        result[name] = read(con, source, day) if table in present else None
    result["missing_tables"] = sorted(set(INSIGHT_TABLES) - present)
    return result


def day_summary(con: duckdb.DuckDBPyConnection, source: str, day: date) -> Row | None:
    return _one(
        con,
        """
        with usual as (
            select median(energy_kwh) as usual_kwh, median(cost_yen) as usual_cost_yen,
                   count(*) as usual_days
            from fct_daily_cost
            where source = $source and date_jst < $day
              and date_jst >= $first
              and dayofweek(date_jst) = dayofweek($day)
        )
        select d.date_jst, d.energy_kwh, d.cost_yen, d.export_kwh, u.*
        from fct_daily_cost as d, usual as u
        where d.source = $source and d.date_jst = $day
        """,
        {"source": source, "day": day, "first": day - timedelta(weeks=USUAL_WEEKS)},
    )


def half_hourly_profile(con: duckdb.DuckDBPyConnection, source: str, day: date) -> list[Row]:
    return _all(
        con,
        """
        select bucket_start_jst, energy_kwh, cost_yen, rate_kind, energy_rate_yen_per_kwh
        from fct_half_hourly_cost
        where source = $source and date_jst = $day
        order by bucket_start_utc
        """,
        {"source": source, "day": day},
    )


def recent_days(con: duckdb.DuckDBPyConnection, source: str, day: date) -> list[Row]:
    return days_between(con, source, day - timedelta(days=DAYS_SHOWN - 1), day)


def days_between(
    con: duckdb.DuckDBPyConnection, source: str, first: date | str, last: date | str
) -> list[Row]:
    return _all(
        con,
        """
        select date_jst, energy_kwh, cost_yen
        from fct_daily_cost
        where source = $source and date_jst >= $first::date and date_jst <= $last::date
        order by date_jst
        """,
        {"source": source, "first": first, "last": last},
    )


def daily_forecast(con: duckdb.DuckDBPyConnection, source: str, day: date) -> list[Row]:
    """The newest day-level forecast made from history up to `day` at the latest."""
    return _all(
        con,
        """
        select target_date_jst, horizon, model, value_kwh, lower_kwh, upper_kwh, level, made_for
        from fct_energy_forecast
        where source = $source and granularity = 'day'
          and made_for = (
              select max(made_for) from fct_energy_forecast
              where source = $source and granularity = 'day' and made_for <= $day
          )
        order by target_date_jst
        """,
        {"source": source, "day": day},
    )


def billing_period(con: duckdb.DuckDBPyConnection, source: str, day: date) -> Row | None:
    return _one(
        con,
        """
        select period_start, period_end, plan_id, is_open, days_with_data, days_in_period,
               energy_kwh, cost_so_far_yen, projected_total_yen, total_yen
        from fct_billing_period
        where source = $source and period_start <= $day and $day < period_end
        """,
        {"source": source, "day": day},
    )


def base_load(con: duckdb.DuckDBPyConnection, source: str, day: date) -> list[Row]:
    return _all(
        con,
        """
        select date_jst, base_load_w, base_load_trend_w_per_day
        from fct_daily_base_load
        where source = $source and date_jst > $first and date_jst <= $day
        order by date_jst
        """,
        {"source": source, "first": day - timedelta(days=DAYS_SHOWN), "day": day},
    )


def findings(con: duckdb.DuckDBPyConnection, source: str, day: date) -> list[Row]:
    return _all(
        con,
        """
        select date_jst, kind, timezone('UTC', observed_at) as observed_at_utc, value, threshold,
               reason
        from fct_energy_findings
        where source = $source and date_jst > $first and date_jst <= $day
        order by observed_at desc, kind
        """,
        {"source": source, "first": day - timedelta(days=FINDING_DAYS), "day": day},
    )


def _all(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[Row]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in cursor.fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Row | None:
    rows = _all(con, sql, params)
    return rows[0] if rows else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
