"""Japanese public holidays for every year the energy data touches, from the `holidays` library.

A dbt-duckdb Python model: the calendar comes from a maintained library, not a hand-written
list. It covers the years of fct_daily_energy and the year after (a billing period that
starts in December ends in January); rebuilt on every run, in about 0.3 s.

A daily build's cost marts wait for this model. It imports the library's Japan calendar alone,
not `holidays.country_holidays` (which imports every country, 0.2 s), and returns a DuckDB
relation rather than a pyarrow table: pyarrow imports pandas (0.4 s) to build a table from
Python lists.
"""

from holidays.countries.japan import Japan


def model(dbt, session):
    dbt.config(materialized="table")
    days = dbt.ref("fct_daily_energy").aggregate("min(date_jst), max(date_jst)")
    first, last = days.fetchall()[0]
    years = range(first.year, last.year + 2) if first is not None else range(0)
    calendar = sorted(Japan(years=years).items())
    return session.sql(
        "select unnest($dates::date[]) as holiday_date, unnest($names::varchar[]) as holiday_name",
        params={"dates": [day for day, _ in calendar], "names": [name for _, name in calendar]},
    )
