-- What is unusual, one row per finding. A table rebuilt on every run from the daily and
-- half-hourly marts (a few rows per day; breaker risk reads the incremental
-- int_half_hourly_peak_power): a day's findings depend on the weeks before it, and a full
-- rebuild keeps them exactly in step with their inputs. Thresholds: docs/insights.md.
{%- set unusual_score = 3.5 %}
{%- set weeks_of_history = 8 %}
{%- set min_history_days = 4 %}
{%- set min_coverage = 0.9 %}
{%- set breaker_share = 0.8 %}

with daily_energy as (

    select * from {{ ref('fct_daily_energy') }}

),

base_loads as (

    select * from {{ ref('fct_daily_base_load') }}

),

contract_days as (

    select * from {{ ref('int_meter_contracts') }}

),

-- Base load: the 30-day trend implies a rise larger than 30 W and than a fifth of the
-- 30-day median (a fridge failing, something left on every night).
base_load_rises as (

    select
        source,
        date_jst,
        'base_load_rise' as kind,
        {{ local_midnight('date_jst') }} as observed_at,
        base_load_trend_w_per_day * 30 as value,
        greatest(30, 0.2 * base_load_median_30_days_w) as threshold,
        printf(
            'The night-time base load has risen by %.0f W over 30 days (%.1f W a day; %.0f W '
            || 'on this day, 30-day median %.0f W), more than the threshold of %.0f W: '
            || 'something may be left on or an appliance may be failing.',
            value, base_load_trend_w_per_day, base_load_w, base_load_median_30_days_w, threshold
        ) as reason
    from base_loads
    where base_load_trend_w_per_day * 30 > greatest(30, 0.2 * base_load_median_30_days_w)

),

-- A day against the same weekday of the previous 8 weeks, only days read well enough.
well_covered_days as (

    select
        source,
        date_jst,
        daily_energy_kwh
    from daily_energy
    where daily_energy_kwh is not null and coverage_ratio >= {{ min_coverage }}

),

weekday_history as (

    select
        day.source,
        day.date_jst,
        day.daily_energy_kwh,
        median(history.daily_energy_kwh) as usual_kwh,
        mad(history.daily_energy_kwh) as mad_kwh,
        count(*) as history_days
    from well_covered_days as day
    inner join well_covered_days as history
        on history.source = day.source
        and history.date_jst between day.date_jst - {{ 7 * weeks_of_history }} and day.date_jst - 7
        and (day.date_jst - history.date_jst) % 7 = 0
    group by day.source, day.date_jst, day.daily_energy_kwh
    having count(*) >= {{ min_history_days }}

),

-- The robust score 0.6745 (x - median) / MAD; the MAD is taken as at least 5 % of the median
-- and 0.1 kWh, so a very regular history does not turn a small change into a large score.
unusual_days as (

    select
        source,
        date_jst,
        'unusual_day' as kind,
        {{ local_midnight('date_jst') }} as observed_at,
        round(
            0.6745 * (daily_energy_kwh - usual_kwh) / greatest(mad_kwh, 0.05 * usual_kwh, 0.1),
            6
        ) as value,
        {{ unusual_score }} as threshold,
        printf(
            'Used %.1f kWh, %s the usual %.1f kWh for a %s (median of the last %d); robust '
            || 'score %.1f, beyond +/-%.1f.',
            daily_energy_kwh,
            case when daily_energy_kwh > usual_kwh then 'above' else 'below' end,
            usual_kwh, dayname(date_jst), history_days, value, threshold
        ) as reason
    from weekday_history
    where abs(
            0.6745 * (daily_energy_kwh - usual_kwh) / greatest(mad_kwh, 0.05 * usual_kwh, 0.1)
        ) > {{ unusual_score }}

),

-- Demand per half hour: the highest power read in it, else its average power.
half_hour_demand as (

    select
        energy.source,
        energy.date_jst,
        energy.bucket_start_utc,
        energy.bucket_start_jst,
        coalesce(peaks.peak_w, energy.energy_kwh * 2000) as demand_w,
        peaks.peak_w is not null as is_peak_reading
    from {{ ref('fct_half_hourly_energy') }} as energy
    left join {{ ref('int_half_hourly_peak_power') }} as peaks
        on peaks.source = energy.source
        and peaks.bucket_start_utc = energy.bucket_start_utc

),

-- The contract's power: kVA x 1000 W, or amperes x 100 V.
contract_limits as (

    select
        source,
        date_jst,
        coalesce(contract_kva * 1000, contract_amperes * 100) as limit_w,
        case
            when contract_kva is not null then printf('%g kVA', contract_kva)
            else printf('%d A', contract_amperes)
        end as contract_size
    from contract_days

),

breaker_risks as (

    select
        demand.source,
        demand.date_jst,
        'breaker_risk' as kind,
        demand.bucket_start_utc as observed_at,
        demand.demand_w as value,
        {{ breaker_share }} * limits.limit_w as threshold,
        printf(
            '%s %.0f W from %s, %.0f %% of the %s contract (%.0f W); above %.0f %% the '
            || 'breaker may trip.',
            case when demand.is_peak_reading then 'Power peaked at' else 'Average power was' end,
            demand.demand_w,
            strftime(demand.bucket_start_jst, '%H:%M'),
            100 * demand.demand_w / limits.limit_w,
            limits.contract_size,
            limits.limit_w,
            100 * {{ breaker_share }}
        ) as reason
    from half_hour_demand as demand
    inner join contract_limits as limits
        on limits.source = demand.source
        and limits.date_jst = demand.date_jst
    where demand.demand_w > {{ breaker_share }} * limits.limit_w

),

low_coverage_days as (

    select
        source,
        date_jst,
        'low_coverage' as kind,
        {{ local_midnight('date_jst') }} as observed_at,
        coverage_ratio as value,
        {{ min_coverage }} as threshold,
        printf(
            'Readings cover %.0f %% of the day (threshold %.0f %%): its figures are partly '
            || 'interpolated across gaps.',
            100 * coverage_ratio, 100 * threshold
        ) as reason
    from daily_energy
    where coverage_ratio < {{ min_coverage }}

),

findings as (

    select * from base_load_rises
    union all
    select * from unusual_days
    union all
    select * from breaker_risks
    union all
    select * from low_coverage_days

),

final as (

    select
        source,
        date_jst,
        kind,
        observed_at,
        cast(value as double) as value,
        cast(threshold as double) as threshold,
        reason
    from findings

)

select * from final
