{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date_jst',
        on_schema_change='fail',
    )
}}

{%- set half_hour_ms = 30 * 60 * 1000 -%}
{#- A half hour's peak depends only on its own readings: the loaded days are enough. -#}
{%- set rebuild = loaded_days() -%}

with readings as (

    select
        source,
        ts_utc,
        instant_power_w
    from {{ ref('stg_meter_readings') }}
    where instant_power_w is not null
    {%- if rebuild %}
        and ts_utc >= {{ local_midnight("date '" ~ rebuild.first_date ~ "'") }}
        and ts_utc < {{ local_midnight("date '" ~ rebuild.last_date ~ "' + 1") }}
    {%- endif %}

),

-- Buckets aligned on the epoch, as in fct_half_hourly_energy.
half_hours as (

    select
        source,
        make_timestamptz(epoch_ms(ts_utc) // {{ half_hour_ms }} * {{ half_hour_ms }} * 1000)
            as bucket_start_utc,
        max(instant_power_w) as peak_w,
        count(*) as power_reading_count
    from readings
    group by all

),

final as (

    select
        source,
        cast({{ to_local('bucket_start_utc') }} as date) as date_jst,
        bucket_start_utc,
        peak_w,
        power_reading_count
    from half_hours

)

select * from final
