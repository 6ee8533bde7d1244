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
  dates, first_date and last_date, and of the sources the raw table holds (for
  register_neighbours, so a model need not list them again).

  The readings are found in the raw table itself (register_neighbours), not through
  int_meter_register_readings, whose conversions would have to run over the whole history.
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
    {%- set sources = reading_sources(readings) -%}

    {%- set window_query -%}
        select
            least(
                date '{{ start_date }}' - 1,
                (select min(cast({{ to_local('least(import_at, export_at)') }} as date))
                    from ({{ register_neighbours(readings, sources, starts_at) }}))
            ) as first_date,
            greatest(
                date '{{ end_date }}' + 1,
                (select max(cast({{ to_local('greatest(import_at, export_at)') }} as date))
                    from ({{ register_neighbours(readings, sources, ends_at, after=true) }}))
            ) as last_date
    {%- endset -%}

    {%- set row = run_query(window_query).rows[0] -%}
    {{ return({
        'first_date': row[0] | string, 'last_date': row[1] | string, 'sources': sources,
    }) }}
{% endmacro %}

{#- The sources `readings` holds, sorted (one scan of its source column). -#}
{% macro reading_sources(readings) %}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set query = 'select distinct source from ' ~ readings ~ ' order by source' -%}
    {{ return(run_query(query).columns[0].values()) }}
{% endmacro %}

{#-
  For each of `sources`, the instant of the last reading of each register before `instant` (a
  TIMESTAMPTZ expression), as the rows (source, import_at, export_at) of a query on `readings`;
  with `after`, the first reading at or after it instead.

  One `order by ts_utc ... limit 1` per source and register: DuckDB reads the row groups next
  to the instant and skips the others by their min/max, a few milliseconds over ten years of
  readings, where an aggregate grouped by source reads the whole history (0.2 s at ten years,
  five times a night).
-#}
{% macro register_neighbours(readings, sources, instant, after=false) %}
    {%- set comparison, direction = ('>=', 'asc') if after else ('<', 'desc') -%}
    {%- for source in sources %}
    {%- set quoted = "'" ~ (source | replace("'", "''")) ~ "'" %}
    select
        {{ quoted }} as source,
        {%- for register in ['import', 'export'] %}
        (
            select ts_utc from {{ readings }}
            where source = {{ quoted }}
                and ts_utc {{ comparison }} {{ instant }}
                and energy_{{ register }}_kwh is not null
            order by ts_utc {{ direction }}
            limit 1
        ) as {{ register }}_at{{ ',' if loop.first }}
        {%- endfor %}
    union all
    {%- endfor %}
    select null::varchar as source, null::timestamptz as import_at, null::timestamptz as export_at
    where false
{% endmacro %}
