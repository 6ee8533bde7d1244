{#-
  The local days an incremental run was given, as a dict of ISO dates first_date, last_date;
  none on a first build, with --full-refresh, or without a start date. The days are the vars
  start_date and end_date (default start_date) when given on the command line, else the
  environment variables HOME_ENERGY_START_DATE and HOME_ENERGY_END_DATE, which is how
  pipeline/dbt_runner.py passes them: they are read only when a model runs, never while dbt
  parses, so a new day does not make dbt parse the whole project again (new vars would).
-#}
{% macro loaded_days() %}
    {%- if not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(requested_days()) }}
{% endmacro %}

{#- The days the run was given (vars or environment, as loaded_days), incremental or not. -#}
{% macro requested_days() %}
    {%- set start_date = var('start_date') or env_var('HOME_ENERGY_START_DATE', '') or none -%}
    {%- if start_date is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set end_date = var('end_date') or env_var('HOME_ENERGY_END_DATE', '') or start_date -%}
    {%- for value in [start_date, end_date] -%}
        {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value | string) -%}
            {{ exceptions.raise_compiler_error(
                "vars start_date/end_date must be local dates YYYY-MM-DD, got '" ~ value ~ "'") }}
        {%- endif -%}
    {%- endfor -%}
    {%- if (end_date | string) < (start_date | string) -%}
        {{ exceptions.raise_compiler_error(
            "var end_date " ~ end_date ~ " is before start_date " ~ start_date) }}
    {%- endif -%}
    {{ return({'first_date': start_date | string, 'last_date': end_date | string}) }}
{% endmacro %}

{#-
  The local dates an incremental run of the energy marts rebuilds, or none to build everything.

  Returns none on a first build, with --full-refresh, or without the `start_date` var.
  Otherwise the loaded days [start_date, end_date] changed, and so did every day that an
  interval with an end in them overlaps: from the date of the last reading before start_date
  (usually the day before, whose share across midnight changes) to the date of the first
  reading after end_date (usually the day after, when days are loaded out of order), and at
  least [start_date - 1, end_date + 1]. Readings are taken per source and register (a register
  is read where its kWh is not NULL), as the energy intervals are. The result is a dict of ISO
  dates: first_date, last_date.

  The query reads the raw table itself, not int_meter_register_readings: it scans the whole
  history before the days, and through the staging view's conversions that costs seconds a
  night over years of readings (bench_publish.py), against a fraction of one here.
-#}
{% macro energy_rebuild_window() %}
    {#- The source is taken before returning at parse time: that is how dbt sees it. -#}
    {%- set readings = source('raw', 'raw_meter_readings') -%}
    {%- set loaded = loaded_days() -%}
    {%- if loaded is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set start_date = loaded.first_date -%}
    {%- set end_date = loaded.last_date -%}
    {%- set starts_at = local_midnight("date '" ~ start_date ~ "'") -%}
    {%- set ends_at = local_midnight("date '" ~ end_date ~ "' + 1") -%}

    {%- set window_query -%}
        -- Two scans, not one with filtered aggregates: the second reads only the newest days.
        with previous_readings as (
            select
                max(ts_utc) filter (where energy_import_kwh is not null) as import_at,
                max(ts_utc) filter (where energy_export_kwh is not null) as export_at
            from {{ readings }}
            where ts_utc < {{ starts_at }}
            group by source
        ),

        next_readings as (
            select
                min(ts_utc) filter (where energy_import_kwh is not null) as import_at,
                min(ts_utc) filter (where energy_export_kwh is not null) as export_at
            from {{ readings }}
            where ts_utc >= {{ ends_at }}
            group by source
        )

        select
            least(
                date '{{ start_date }}' - 1,
                (select min(cast({{ to_local('least(import_at, export_at)') }} as date))
                    from previous_readings)
            ) as first_date,
            greatest(
                date '{{ end_date }}' + 1,
                (select max(cast({{ to_local('greatest(import_at, export_at)') }} as date))
                    from next_readings)
            ) as last_date
    {%- endset -%}

    {%- set row = run_query(window_query).rows[0] -%}
    {{ return({'first_date': row[0] | string, 'last_date': row[1] | string}) }}
{% endmacro %}
