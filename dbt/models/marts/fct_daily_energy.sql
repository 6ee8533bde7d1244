{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date_jst',
        on_schema_change='fail',
    )
}}

{%- set rebuild = energy_rebuild_window() -%}

with half_hours as (

    select * from {{ ref('fct_half_hourly_energy') }}
    {%- if rebuild %}
    where date_jst between date '{{ rebuild.first_date }}' and date '{{ rebuild.last_date }}'
    {%- endif %}

),

readings as (

    select * from {{ ref('stg_meter_readings') }}
    {%- if rebuild %}
    where ts_utc >= {{ local_midnight("date '" ~ rebuild.first_date ~ "'") }}
        and ts_utc < {{ local_midnight("date '" ~ rebuild.last_date ~ "' + 1") }}
    {%- endif %}

),

-- The day's energy is the sum of its half hours, never max - min of the day's readings.
energy_by_day as (

    select
        source,
        date_jst,
        round(sum(energy_kwh), 6) as daily_energy_kwh,
        round(sum(export_kwh), 6) as daily_export_kwh,
        sum(covered_seconds) as covered_seconds,
        bool_or(reset_detected) as reset_detected
    from half_hours
    group by source, date_jst

),

readings_by_day as (

    select
        source,
        date_jst,
        count(*) as reading_count,
        min(ts_utc) as first_reading_at,
        max(ts_utc) as last_reading_at,
        max(instant_power_w) as peak_w,
        -- The earliest reading at the peak, so that every build picks the same one.
        first(ts_utc order by instant_power_w desc, ts_utc asc)
        filter (where instant_power_w is not null) as peak_at
    from readings
    group by source, date_jst

),

days as (

    select
        coalesce(energy_by_day.source, readings_by_day.source) as source,
        coalesce(energy_by_day.date_jst, readings_by_day.date_jst) as date_jst,
        energy_by_day.daily_energy_kwh,
        energy_by_day.daily_export_kwh,
        readings_by_day.peak_w,
        readings_by_day.peak_at,
        coalesce(readings_by_day.reading_count, 0) as reading_count,
        readings_by_day.first_reading_at,
        readings_by_day.last_reading_at,
        coalesce(energy_by_day.covered_seconds, 0) as covered_seconds,
        coalesce(energy_by_day.reset_detected, false) as reset_detected
    from energy_by_day
    full outer join readings_by_day
        on energy_by_day.source = readings_by_day.source
        and energy_by_day.date_jst = readings_by_day.date_jst

),

final as (

    select
        source,
        date_jst,
        daily_energy_kwh,
        daily_export_kwh,
        peak_w,
        peak_at,
        reading_count,
        first_reading_at,
        last_reading_at,
        -- Share of the local day (23, 24 or 25 hours) covered by short intervals.
        round(
            covered_seconds / (
                epoch({{ local_midnight('date_jst + 1') }})
                - epoch({{ local_midnight('date_jst') }})
            ),
            6
        ) as coverage_ratio,
        reset_detected
    from days

)

select * from final
