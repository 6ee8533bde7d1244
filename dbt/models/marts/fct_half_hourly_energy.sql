{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date_jst',
        on_schema_change='fail',
    )
}}

{%- set half_hour_ms = 30 * 60 * 1000 -%}
{%- set max_gap_ms = var('max_gap_minutes') * 60 * 1000 -%}
{%- set rebuild = energy_rebuild_window() -%}

-- Not materialized: each use below filters it by time, which reaches the table scan only
-- through a CTE that DuckDB inlines (a materialized one would read the whole history).
with register_readings as not materialized (

    select
        source,
        register,
        ts_utc,
        kwh,
        instant_power_w
    from {{ ref('int_meter_register_readings') }}

),

{% if rebuild -%}
{%- set window_starts_at = local_midnight("date '" ~ rebuild.first_date ~ "'") -%}
{%- set window_ends_at = local_midnight("date '" ~ rebuild.last_date ~ "' + 1") %}
-- The last reading before the window per source and register, from the raw table itself
-- (through the staging view's conversions, finding it would read the whole history).
previous_instants as (

    {{ register_neighbours(source('raw', 'raw_meter_readings'), rebuild.sources, window_starts_at) }}

),

previous_readings as (

    select
        raw.source,
        'import' as register,
        raw.ts_utc,
        raw.energy_import_kwh as kwh,
        raw.instant_power_w
    from {{ source('raw', 'raw_meter_readings') }} as raw
    inner join previous_instants
        on raw.source = previous_instants.source and raw.ts_utc = previous_instants.import_at

    union all

    select
        raw.source,
        'export' as register,
        raw.ts_utc,
        raw.energy_export_kwh as kwh,
        null::double as instant_power_w
    from {{ source('raw', 'raw_meter_readings') }} as raw
    inner join previous_instants
        on raw.source = previous_instants.source and raw.ts_utc = previous_instants.export_at

),

-- Only the rebuilt days' readings, plus per source and register the reading on each side:
-- the intervals that reach into the window from outside are computed exactly as in a full build.
selected_readings as (

    select * from register_readings
    where ts_utc >= {{ window_starts_at }} and ts_utc < {{ window_ends_at }}

    union all

    select * from previous_readings

    union all

    select source, register, min(ts_utc), arg_min(kwh, ts_utc), arg_min(instant_power_w, ts_utc)
    from register_readings
    where ts_utc >= {{ window_ends_at }}
    group by source, register

),
{%- else %}
selected_readings as (

    select * from register_readings

),
{%- endif %}

-- Each pair of consecutive readings of a register is an interval (started_at, ended_at].
intervals as (

    select
        source,
        register,
        epoch_ms(lag(ts_utc) over consecutive) as started_ms,
        epoch_ms(ts_utc) as ended_ms,
        kwh - lag(kwh) over consecutive as counted_kwh,
        kwh as ended_kwh,
        -- What the power read at both ends says was drawn (NULL where power was not read).
        (lag(instant_power_w) over consecutive + instant_power_w) / 2000.0
        * (epoch_ms(ts_utc) - epoch_ms(lag(ts_utc) over consecutive)) / 3600000.0
            as power_estimate_kwh
    from selected_readings
    window consecutive as (partition by source, register order by ts_utc)

),

classified_intervals as (

    select
        source,
        register,
        started_ms,
        ended_ms,
        counted_kwh,
        ended_kwh,
        power_estimate_kwh,
        (ended_ms - started_ms) / 3600000.0 * {{ var('max_plausible_kw') }} as plausible_kwh
    from intervals
    where started_ms is not null

),

interval_energy as (

    select
        source,
        register,
        started_ms,
        ended_ms,
        -- A counter that dropped (reset or replaced meter) or jumped faster than any household
        -- can draw is a discontinuity; its interval never counts a negative or huge amount.
        counted_kwh < 0 or counted_kwh > plausible_kwh as is_discontinuity,
        case
            when counted_kwh between 0 and plausible_kwh then counted_kwh
            -- Across a discontinuity the counter cannot say what was drawn. After a reset its
            -- new value (counted since restarting from zero) is a floor; over a short interval
            -- the power read at both ends estimates the rest. Never negative or implausible.
            else
                greatest(
                    case
                        when counted_kwh < 0 and ended_kwh <= plausible_kwh then ended_kwh
                        else 0
                    end,
                    case
                        when ended_ms - started_ms <= {{ max_gap_ms }}
                            then least(greatest(coalesce(power_estimate_kwh, 0), 0), plausible_kwh)
                        else 0
                    end
                )
        end as energy_kwh,
        ended_ms - started_ms <= {{ max_gap_ms }} as is_covered
    from classified_intervals

),

-- An interval's energy is shared among the half hours it overlaps in proportion to time, so
-- the energy of a gap across midnight goes partly to each day. Half hours are aligned on
-- the epoch, which is local :00/:30 in every zone whose UTC offset is whole half hours.
interval_half_hours as (

    select
        *,
        unnest(generate_series(
            started_ms // {{ half_hour_ms }} * {{ half_hour_ms }},
            (ended_ms - 1) // {{ half_hour_ms }} * {{ half_hour_ms }},
            {{ half_hour_ms }}
        )) as bucket_ms
    from interval_energy

),

interval_shares as (

    select
        source,
        register,
        bucket_ms,
        is_discontinuity,
        is_covered,
        least(ended_ms, bucket_ms + {{ half_hour_ms }}) - greatest(started_ms, bucket_ms)
            as overlap_ms,
        energy_kwh * overlap_ms / (ended_ms - started_ms) as share_kwh
    from interval_half_hours

),

half_hours as (

    select
        source,
        make_timestamptz(bucket_ms * 1000) as bucket_start_utc,
        round(sum(share_kwh) filter (where register = 'import'), 6) as energy_kwh,
        round(sum(share_kwh) filter (where register = 'export'), 6) as export_kwh,
        coalesce(
            sum(overlap_ms) filter (where register = 'import' and is_covered), 0
        ) / 1000.0 as covered_seconds,
        bool_or(is_discontinuity) as reset_detected
    from interval_shares
    group by source, bucket_ms

),

final as (

    select
        source,
        cast({{ to_local('bucket_start_utc') }} as date) as date_jst,
        bucket_start_utc,
        {{ to_local('bucket_start_utc') }} as bucket_start_jst,
        energy_kwh,
        export_kwh,
        covered_seconds,
        reset_detected
    from half_hours
    {%- if rebuild %}
    where cast({{ to_local('bucket_start_utc') }} as date)
        between date '{{ rebuild.first_date }}' and date '{{ rebuild.last_date }}'
    {%- endif %}

)

select * from final
