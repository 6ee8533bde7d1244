-- The base load per source and day and its 30-day trend. A table rebuilt on every run from
-- fct_half_hourly_energy's night half hours: one pass over a few rows per day, milliseconds,
-- and a day's trend depends on the 29 days before it.
{%- set min_night_half_hours = 6 %}

with night_half_hours as (

    -- Half hours starting 01:00 to 04:30 local time: 8 a night.
    select
        source,
        date_jst,
        energy_kwh * 2000 as average_w
    from {{ ref('fct_half_hourly_energy') }}
    where energy_kwh is not null and hour(bucket_start_jst) between 1 and 4

),

-- The typical lowest demand at night: the 25th percentile of the night's half-hour average
-- power (robust to one odd half hour, unlike the minimum).
base_loads as (

    select
        source,
        date_jst,
        quantile_cont(average_w, 0.25) as base_load_w,
        count(*) as night_half_hours
    from night_half_hours
    group by source, date_jst
    having count(*) >= {{ min_night_half_hours }}

),

trends as (

    select
        source,
        date_jst,
        base_load_w,
        night_half_hours,
        regr_slope(base_load_w, date_jst - date '2000-01-01') over last_30_days
            as trend_w_per_day,
        count(*) over last_30_days as trend_days,
        median(base_load_w) over last_30_days as median_30_days_w
    from base_loads
    window last_30_days as (
        partition by source
        order by date_jst
        range between interval 29 days preceding and current row
    )

),

final as (

    select
        source,
        date_jst,
        round(base_load_w, 6) as base_load_w,
        -- Least-squares slope over the days with a base load among the last 30; rounded so
        -- that every build gives the same figure.
        case when trend_days >= 7 then round(trend_w_per_day, 6) end
            as base_load_trend_w_per_day,
        round(median_30_days_w, 6) as base_load_median_30_days_w,
        trend_days,
        night_half_hours
    from trends

)

select * from final
