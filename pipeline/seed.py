"""Sample readings for development, e.g. `python -m pipeline.seed --day 2025-12-17`.

In the spirit of the seed runbook's `dev_seed` (`--start-utc`, `--interval-minutes`, `--count`,
`--source`). Each source follows a household load curve (a base load, a morning and an evening
peak, deterministic noise), and its cumulative `energy_import_kwh` is the integral of that power,
so the daily energy of the sample is known. The readings are computed in DuckDB and written to
InfluxDB as line protocol in batches.

`--profile household` draws the power from pipeline/household.py instead: working days and days
off (Japanese holidays), seasons, days away and noise, for trying the forecasts on.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pandas as pd

from contracts.influx import InfluxSettings, make_client
from pipeline.config import calendar, influx
from pipeline.days import day_window_utc
from pipeline.household import household_power_w

READINGS_SQL = """
with sources as (
    select unnest($sources) as source, generate_subscripts($sources, 1) as source_no
),

ticks as (
    select source, source_no, i, $start_ms + i * $interval_ms as ts_ms
    from sources, range($count) as t(i)
),

curve as (
    select
        *,
        date_part('hour', timezone($tz, to_timestamp(ts_ms / 1000)))
            + date_part('minute', timezone($tz, to_timestamp(ts_ms / 1000))) / 60.0 as hour
    from ticks
),

power as (
    select
        source,
        source_no,
        ts_ms,
        round(
            180 + 40 * source_no % 5
            + 900 * exp(-pow(hour - 7.5, 2) / 0.8)
            + 1400 * exp(-pow(hour - 19.5, 2) / 2.5)
            + (hash(source, i) % 200)::double,
            1
        ) as instant_power_w
    from curve
),

energy as (
    select
        source,
        ts_ms,
        instant_power_w,
        -- The meter's counter is the integral of the power drawn before each reading.
        1000 + 37 * source_no + coalesce(sum(instant_power_w) over (
            partition by source order by ts_ms
            rows between unbounded preceding and 1 preceding
        ), 0) * $interval_ms / 3.6e9 as energy_import_kwh
    from power
)

select printf(
    '%s,source=%s instant_power_w=%.1f,energy_import_kwh=%.6f %d',
    $measurement, source, instant_power_w, energy_import_kwh, ts_ms
)
from energy
order by ts_ms, source
"""


def readings_lines(
    *,
    start: datetime,
    interval: timedelta,
    count: int,
    sources: list[str],
    measurement: str,
    tz: str,
    batch: int = 50_000,
):
    """Line-protocol batches of the sample readings, computed by DuckDB."""
    with duckdb.connect() as con:
        result = con.execute(
            READINGS_SQL,
            {
                "sources": sources,
                "start_ms": int(start.timestamp() * 1000),
                "interval_ms": int(interval.total_seconds() * 1000),
                "count": count,
                "measurement": measurement,
                "tz": tz,
            },
        )
        while rows := result.fetchmany(batch):
            yield [line for (line,) in rows]


def household_lines(
    *,
    start: datetime,
    interval: timedelta,
    count: int,
    sources: list[str],
    measurement: str,
    tz: str,
    seed: int = 0,
    batch: int = 50_000,
):
    """Line-protocol batches of readings of pipeline/household.py's curves, the register
    integrating the power drawn before each reading as in READINGS_SQL."""
    registers = {source: 1000.0 + 37 * n for n, source in enumerate(sources, start=1)}
    step_h = interval.total_seconds() / 3600
    per_batch = max(1, batch // len(sources))
    for first in range(0, count, per_batch):
        instants = pd.date_range(
            start + first * interval, periods=min(per_batch, count - first), freq=interval
        )
        stamps = instants.as_unit("ms").asi8
        columns = []
        for source in sources:
            power = np.round(household_power_w(source, instants, tz, seed), 1)
            drawn = np.cumsum(power) * step_h / 1000
            energy = registers[source] + np.concatenate(([0.0], drawn[:-1]))
            registers[source] += drawn[-1]
            columns.append(
                [
                    f"{measurement},source={source} instant_power_w={p:.1f},"
                    f"energy_import_kwh={e:.6f} {t}"
                    for p, e, t in zip(power, energy, stamps, strict=True)
                ]
            )
        yield [line for row in zip(*columns, strict=True) for line in row]


def seed(settings: InfluxSettings, profile: str = "simple", **kwargs) -> int:
    client = make_client(settings)
    client.create_database(settings.database)
    written = 0
    generate = household_lines if profile == "household" else readings_lines
    for lines in generate(measurement=settings.measurement, **kwargs):
        client.write(lines, params={"db": settings.database, "precision": "ms"}, protocol="line")
        written += len(lines)
    return written


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.seed", description=__doc__.split("\n")[0])
    when = p.add_mutually_exclusive_group()
    when.add_argument("--start-utc", help="first reading, e.g. 2025-12-16T15:00:00Z")
    when.add_argument("--day", type=date.fromisoformat, help="fill one local day (YYYY-MM-DD)")
    every = p.add_mutually_exclusive_group()
    every.add_argument("--interval-minutes", type=float, help="minutes between readings")
    every.add_argument("--interval-seconds", type=float, help="seconds between readings")
    p.add_argument("--count", type=int, help="readings per source (default: fill --day, or 24)")
    p.add_argument("--source", action="append", help="source tag, repeatable (SOURCE_DEFAULT)")
    p.add_argument("--sources", type=int, help="generate meter1..meterN instead of --source")
    p.add_argument("--tz", default=None, help="time zone of the load curve and --day (TZ)")
    p.add_argument(
        "--profile",
        choices=["simple", "household"],
        default="simple",
        help="simple: the same day every day; household: pipeline/household.py's realistic "
        "curves (weekdays, Japanese holidays, seasons, noise)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of --profile household")
    return p.parse_args(argv)


def _interval(args: argparse.Namespace) -> timedelta:
    if args.interval_seconds:
        return timedelta(seconds=args.interval_seconds)
    return timedelta(minutes=args.interval_minutes or 30)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tz = args.tz or calendar().tz
    interval = _interval(args)
    if args.day:
        start, end = day_window_utc(args.day, ZoneInfo(tz))
        count = args.count or int((end - start) / interval)
    else:
        start = datetime.fromisoformat(args.start_utc or "2025-12-16T15:00:00Z").astimezone(UTC)
        count = args.count or 24
    if args.sources:
        sources = [f"meter{n}" for n in range(1, args.sources + 1)]
    else:
        sources = args.source or [calendar().source_default]
    settings = influx().settings()  # the InfluxDB the pipeline reads
    extra = {"seed": args.seed} if args.profile == "household" else {}
    n = seed(
        settings,
        args.profile,
        start=start,
        interval=interval,
        count=count,
        sources=sources,
        tz=tz,
        **extra,
    )
    print(f"wrote {n} readings for {', '.join(sources)} from {start.isoformat()} to {settings.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
