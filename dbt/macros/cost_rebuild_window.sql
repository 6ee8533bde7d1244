{#-
  The seeds whose contents the cost marts are computed from. A cost mart stores their
  fingerprint in every row (column tariff_fingerprint); an incremental run that finds a row
  with another fingerprint rebuilds every day, so an edited tariff or contract reaches all
  history at the next build.
-#}
{% macro tariff_seeds() -%}
    {{ return([
        ref('tariff_plans'), ref('tariff_basic_charges'), ref('tariff_energy_rates'),
        ref('tariff_fuel_adjustments'), ref('tariff_renewable_surcharges'),
        ref('tariff_export_rates'), ref('meter_contracts'),
    ]) }}
{%- endmacro %}

{#- An md5 of every row of the tariff seeds, in a stable order ('' while dbt parses). -#}
{% macro tariff_fingerprint() %}
    {#- The refs are taken before returning at parse time: that is how dbt sees them. -#}
    {%- set seeds = tariff_seeds() -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set fingerprint_query -%}
        select md5(string_agg(seed_rows, '|' order by seed_name)) from (
            {%- for seed in seeds %}
            select
                '{{ seed.identifier }}' as seed_name,
                coalesce(string_agg(cast(seed_row as varchar), ';' order by cast(seed_row as varchar)), '')
                    as seed_rows
            from {{ seed }} as seed_row
            {{- " union all" if not loop.last }}
            {%- endfor %}
        )
    {%- endset -%}
    {{ return(run_query(fingerprint_query).rows[0][0]) }}
{% endmacro %}

{#-
  The local dates an incremental run of a cost mart rebuilds, or none to build everything.

  The energy of the days energy_rebuild_window names changed, and with it the cumulative kWh
  (hence the tier) of every later day of the same billing period. The result spans every
  billing period, of any source, that holds one of those days: first_date is the earliest
  period start, last_date the latest period's last day. Returns none (rebuild everything) on
  a full build, without the start_date var, or when the mart holds a row computed from other
  tariff data than `fingerprint`. `contracts` is int_meter_contracts.
-#}
{% macro cost_rebuild_window(contracts, fingerprint) %}
    {%- set energy = energy_rebuild_window() -%}
    {%- if energy is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set stale_query -%}
        select count(*) from {{ this }} where tariff_fingerprint != '{{ fingerprint }}'
    {%- endset -%}
    {%- if run_query(stale_query).rows[0][0] > 0 -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set window_query -%}
        select
            least(min(period_start), date '{{ energy.first_date }}'),
            greatest(max(period_end) - 1, date '{{ energy.last_date }}')
        from {{ contracts }}
        where date_jst between date '{{ energy.first_date }}' and date '{{ energy.last_date }}'
    {%- endset -%}
    {%- set row = run_query(window_query).rows[0] -%}
    {{ return({'first_date': row[0] | string, 'last_date': row[1] | string}) }}
{% endmacro %}
