{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date_jst',
        on_schema_change='fail',
    )
}}

{%- set fingerprint = tariff_fingerprint() -%}
{%- set rebuild = cost_rebuild_window(ref('int_meter_contracts'), fingerprint) -%}

with half_hours as (

    select * from {{ ref('fct_half_hourly_cost') }}
    {%- if rebuild %}
    where date_jst between date '{{ rebuild.first_date }}' and date '{{ rebuild.last_date }}'
    {%- endif %}

),

-- Sums rounded to 1e-6 like their parts, so that every build gives the same figures.
final as (

    select
        source,
        date_jst,
        -- A plan change takes effect at a local midnight: one plan per day.
        min(plan_id) as plan_id,
        round(sum(energy_kwh), 6) as energy_kwh,
        round(sum(export_kwh), 6) as export_kwh,
        round(sum(energy_charge_yen), 6) as energy_charge_yen,
        round(sum(fuel_adjustment_yen), 6) as fuel_adjustment_yen,
        round(sum(renewable_surcharge_yen), 6) as renewable_surcharge_yen,
        round(sum(export_credit_yen), 6) as export_credit_yen,
        round(sum(cost_yen), 6) as cost_yen,
        min(period_start) as period_start,
        '{{ fingerprint }}' as tariff_fingerprint
    from half_hours
    group by source, date_jst

)

select * from final
