"""Japanese public holidays for every year the energy data touches, from the `holidays` library.

A dbt-duckdb Python model: the calendar comes from a maintained library, not a hand-written
list. It covers the years of fct_daily_energy and the year after (a billing period that
starts in December ends in January); rebuilt on every run. The library's part takes about
0.1 s; dbt's running of a Python model adds about 0.5 s (a year's daily build, 2 cores).
"""

import holidays
import pyarrow


def model(dbt, session):
    dbt.config(materialized="table")
    days = dbt.ref("fct_daily_energy").aggregate("min(date_jst), max(date_jst)")
    first, last = days.fetchall()[0]
    years = range(first.year, last.year + 2) if first is not None else range(0)
    calendar = sorted(holidays.country_holidays("JP", years=years).items())
    return pyarrow.table(
        {
            "holiday_date": pyarrow.array([day for day, _ in calendar], pyarrow.date32()),
            "holiday_name": pyarrow.array([name for _, name in calendar], pyarrow.string()),
        }
    )
