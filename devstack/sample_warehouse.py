"""A published DuckDB warehouse holding the insights tables, for the page's tests and benchmark.

The tables have the columns of the insights contract (HELPERS.md, design.md section 8) and
plausible numbers: a daily rhythm with day/night time-of-use bands, weekday/weekend
differences, calendar-month billing periods, a base load, a 7-day forecast and a few findings.
It is published like the pipeline publishes (pipeline.publishing.Warehouse: a verified `next`
file swapped in, or one transaction in place), so readers meet real publishes.

While the dbt marts and ForecastDay that build these tables for real are being written, this is
what the page is tested against; the numbers here are data for the tests, not the tariff logic.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from pipeline.database import connect
from pipeline.publishing import Warehouse
from pipeline.schema import SCHEMA_SQL

SAMPLE_TABLES_SQL = """
create or replace table fct_half_hourly_cost as
with buckets as (
    select s.source, d.day::date as date_jst, k.k
    from unnest($sources::varchar[]) as s(source),
         generate_series($first::date, $last::date, interval 1 day) as d(day),
         range(48) as k(k)
), shaped as (
    select source, date_jst,
        date_jst + to_minutes(30 * k) as bucket_start_jst,
        k,
        isodow(date_jst) >= 6 as weekend,
        -- a morning and an evening peak over a base load, and noise that differs by source/day
        $scale * (0.12 + 0.35 * exp(-power((k - 15) / 3.0, 2))
            + 0.6 * exp(-power((k - 38) / 4.0, 2))
            + 0.15 * (hash(source, date_jst, k) % 1000) / 1000.0) as energy_kwh
    from buckets
), rated as (
    select *,
        case when weekend or k < 14 or k >= 44 then 'night' else 'day' end as rate_kind
    from shaped
)
select
    source,
    date_jst,
    timezone('Asia/Tokyo', bucket_start_jst) as bucket_start_utc,
    bucket_start_jst,
    'tou-sample' as plan_id,
    energy_kwh,
    0.0::double as export_kwh,
    rate_kind,
    case rate_kind when 'day' then 35.76::double else 28.85::double end as energy_rate_yen_per_kwh,
    energy_kwh * energy_rate_yen_per_kwh as energy_charge_yen,
    energy_kwh * -1.75::double as fuel_adjustment_yen,
    energy_kwh * 3.49::double as renewable_surcharge_yen,
    0.0::double as export_credit_yen,
    energy_charge_yen + fuel_adjustment_yen + renewable_surcharge_yen as cost_yen
from rated;

create or replace table fct_daily_cost as
select source, date_jst, any_value(plan_id) as plan_id,
    sum(energy_kwh) as energy_kwh, sum(export_kwh) as export_kwh,
    sum(energy_charge_yen) as energy_charge_yen, sum(fuel_adjustment_yen) as fuel_adjustment_yen,
    sum(renewable_surcharge_yen) as renewable_surcharge_yen,
    sum(export_credit_yen) as export_credit_yen, sum(cost_yen) as cost_yen
from fct_half_hourly_cost
group by all;

create or replace table fct_billing_period as
with periods as (
    select source, date_trunc('month', date_jst)::date as period_start,
        any_value(plan_id) as plan_id, count(*) as days_with_data,
        sum(energy_kwh) as energy_kwh, sum(export_kwh) as export_kwh,
        sum(energy_charge_yen) as energy_charge_yen,
        sum(fuel_adjustment_yen) as fuel_adjustment_yen,
        sum(renewable_surcharge_yen) as renewable_surcharge_yen,
        sum(export_credit_yen) as export_credit_yen, sum(cost_yen) as cost_yen
    from fct_daily_cost group by all
), shaped as (
    select *, (period_start + interval 1 month)::date as period_end,
        date_diff('day', period_start, (period_start + interval 1 month)::date) as days_in_period,
        1246.96::double as basic_charge_yen
    from periods
)
select source, period_start, period_end, plan_id, 40 as contract_amperes,
    null::double as contract_kva, $last::date < period_end - 1 as is_open,
    days_with_data, days_in_period, energy_kwh, export_kwh, basic_charge_yen,
    energy_charge_yen, fuel_adjustment_yen, renewable_surcharge_yen, export_credit_yen,
    floor(basic_charge_yen + cost_yen - export_credit_yen) as total_yen,
    basic_charge_yen + cost_yen - export_credit_yen as cost_so_far_yen,
    case when $last::date < period_end - 1
        then basic_charge_yen + (cost_yen - export_credit_yen) / days_with_data * days_in_period
        else floor(basic_charge_yen + cost_yen - export_credit_yen) end as projected_total_yen
from shaped;

create or replace table fct_daily_base_load as
with daily as (
    select source, date_jst, min(energy_kwh) * 2000 as base_load_w
    from fct_half_hourly_cost group by all
)
select source, date_jst, base_load_w,
    case when count(*) over last_30 >= 7
        then regr_slope(base_load_w, date_jst - $first::date) over last_30 end
        as base_load_trend_w_per_day
from daily
window last_30 as (partition by source order by date_jst rows between 29 preceding and current row);

create or replace table fct_energy_findings as
select source, date_jst, 'unusual_day' as kind, timezone('Asia/Tokyo', date_jst::timestamp)
        as observed_at, energy_kwh as value, 1.3 * avg(energy_kwh) over w as threshold,
    format('Used {:.1f} kWh, more than 1.3 times the usual {:.1f} kWh for this weekday.',
        energy_kwh, avg(energy_kwh) over w) as reason
from fct_daily_cost
window w as (partition by source, isodow(date_jst) order by date_jst
             rows between 8 preceding and 1 preceding)
qualify energy_kwh > 1.02 * avg(energy_kwh) over w
union all
select source, date_jst, 'breaker_risk', timezone('Asia/Tokyo', bucket_start_jst),
    energy_kwh * 2000, 1800,
    format('Drew {:.0f} W on average at {} near the 40 A contract.', energy_kwh * 2000,
        strftime(bucket_start_jst, '%H:%M'))
from fct_half_hourly_cost
where energy_kwh * 2000 > 1800 and hash(source, date_jst) % 4 = 0
qualify row_number() over (partition by source, date_jst order by energy_kwh desc) = 1;

create or replace table fct_energy_forecast as
with recent as (
    select source, avg(energy_kwh) as mean_kwh, stddev_samp(energy_kwh) as sd_kwh
    from fct_daily_cost where date_jst > $last::date - 7 group by source
)
select source, $last::date as made_for, timezone('UTC', timestamp '2026-01-01 00:00') as made_at,
    'day' as granularity, timezone('Asia/Tokyo', ($last::date + h)::timestamp) as target_start_utc,
    ($last::date + h)::date as target_date_jst, h as horizon, 'seasonal_naive' as model,
    mean_kwh * (1 + 0.02 * h) as value_kwh, mean_kwh * (1 + 0.02 * h) - 1.28 * sd_kwh as lower_kwh,
    mean_kwh * (1 + 0.02 * h) + 1.28 * sd_kwh as upper_kwh, 80 as level
from recent, range(1, 8) as r(hh), lateral (select hh::integer as h);
"""


def publish_sample_warehouse(
    live: Path,
    sources: list[str],
    first: date,
    last: date,
    scale: float = 1.0,
    mode: str = "swap",
) -> None:
    """Publish a warehouse holding [first, last] for `sources`; `scale` multiplies every kWh."""
    with Warehouse(live, mode).publishing() as path, connect(path) as con:
        con.execute(SCHEMA_SQL)
        params = {"sources": sources, "first": first, "last": last, "scale": scale}
        for statement in SAMPLE_TABLES_SQL.split(";\n\n"):
            # DuckDB binds parameters one statement at a time, and only those it names.
            con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})


def sample_days(last: date, days: int) -> tuple[date, date]:
    """(first, last) of `days` local days ending with `last`."""
    return last - timedelta(days=days - 1), last


@contextmanager
def locked_by_another_process(live: Path) -> Iterator[None]:
    """Another process holds DuckDB's own write lock on `live` (someone's duckdb shell)."""
    script = (
        f"import duckdb, sys; c = duckdb.connect({str(live)!r}); print('held', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError(f"could not lock {live} from another process")
        yield
    finally:
        holder.communicate("", timeout=30)
