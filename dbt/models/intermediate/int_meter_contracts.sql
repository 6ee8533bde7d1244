-- The meter contract in force for each source and local day, and the billing period the day
-- belongs to. Days run over every billing period that holds a day of the source's energy
-- data, including the days of those periods without data (the basic charge is for the whole
-- period).
with energy_days as (

    select
        source,
        min(date_jst) as first_date,
        max(date_jst) as last_date
    from {{ ref('fct_daily_energy') }}
    group by source

),

-- A billing period is at most 31 days long: a month either side reaches every period that
-- holds a day of data.
calendar as (

    select
        source,
        first_date,
        last_date,
        cast(unnest(generate_series(first_date - 31, last_date + 31, interval 1 day)) as date)
            as date_jst
    from energy_days

),

contracts as (

    select * from {{ ref('meter_contracts') }}

),

-- A source's own row wins over the '*' row valid the same day.
matched_contracts as (

    select
        calendar.source,
        calendar.date_jst,
        calendar.first_date,
        calendar.last_date,
        contracts.plan_id,
        contracts.contract_amperes,
        contracts.contract_kva,
        contracts.meter_reading_day,
        row_number() over (
            partition by calendar.source, calendar.date_jst
            order by contracts.source = '*'
        ) as preference
    from calendar
    left join contracts
        on contracts.source in (calendar.source, '*')
        and {{ valid_on('contracts', 'calendar.date_jst') }}

),

-- A period starts on the meter-reading day (the 1st when unset) on or before the date.
periods as (

    select
        *,
        cast(
            date_trunc('month', date_jst) + to_days(coalesce(meter_reading_day, 1) - 1)
            - case when day(date_jst) < coalesce(meter_reading_day, 1) then interval 1 month
                else interval 0 month
            end
            as date
        ) as period_start
    from matched_contracts
    where preference = 1

),

final as (

    select
        source,
        date_jst,
        plan_id,
        contract_amperes,
        contract_kva,
        meter_reading_day,
        period_start,
        cast(period_start + interval 1 month as date) as period_end
    from periods
    where period_start <= last_date
        and cast(period_start + interval 1 month as date) > first_date

)

select * from final
