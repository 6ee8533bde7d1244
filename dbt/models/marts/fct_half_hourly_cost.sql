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

with contract_days as (

    select * from {{ ref('int_meter_contracts') }}
    {%- if rebuild %}
    -- Whole billing periods, so each rebuilt day's cumulative kWh starts from its period's start.
    where period_end > date '{{ rebuild.first_date }}'
        and period_start <= date '{{ rebuild.last_date }}'
    {%- endif %}

),

energy as (

    select * from {{ ref('fct_half_hourly_energy') }}
    {%- if rebuild %}
    where date_jst between date '{{ rebuild.first_date }}' - 31 and date '{{ rebuild.last_date }}'
    {%- endif %}

),

holidays as (

    select * from {{ ref('int_public_holidays') }}

),

plans as (

    select * from {{ ref('tariff_plans') }}

),

rates as (

    select
        *,
        {{ hhmm_minutes('window_start') }} as start_minute,
        {{ hhmm_minutes('window_end') }} as end_minute
    from {{ ref('tariff_energy_rates') }}

),

-- A half hour without an import (or export) register counts 0 kWh here.
half_hours as (

    select
        energy.source,
        energy.date_jst,
        energy.bucket_start_utc,
        energy.bucket_start_jst,
        coalesce(energy.energy_kwh, 0) as energy_kwh,
        coalesce(energy.export_kwh, 0) as export_kwh,
        contract_days.plan_id,
        contract_days.period_start,
        case
            when holidays.holiday_date is not null then 'holiday'
            when isodow(energy.date_jst) >= 6 then 'weekend'
            else 'weekday'
        end as day_type,
        hour(energy.bucket_start_jst) * 60 + minute(energy.bucket_start_jst) as start_minute
    from energy
    inner join contract_days
        on contract_days.source = energy.source
        and contract_days.date_jst = energy.date_jst
    left join holidays on holidays.holiday_date = energy.date_jst

),

-- The billing period's imported kWh before and after each half hour (rounded like the
-- half hours themselves, so that every build sums to the same figure).
cumulative as (

    select
        *,
        round(coalesce(sum(energy_kwh) over earlier, 0), 6) as kwh_before,
        round(coalesce(sum(energy_kwh) over earlier, 0) + energy_kwh, 6) as kwh_after
    from half_hours
    window earlier as (
        partition by source, period_start
        order by bucket_start_utc
        rows between unbounded preceding and 1 preceding
    )

),

-- Each rate row that applies to the half hour, with the kWh of the half hour in its tier: a
-- tier boundary inside a half hour splits its kWh between the two tiers.
tier_shares as (

    select
        cumulative.source,
        cumulative.bucket_start_utc,
        rates.rate_kind,
        rates.yen_per_kwh,
        rates.tier_from_kwh,
        greatest(
            least(cumulative.kwh_after, coalesce(rates.tier_to_kwh, 'infinity'))
            - greatest(cumulative.kwh_before, rates.tier_from_kwh),
            0
        ) as tier_kwh
    from cumulative
    inner join rates
        on rates.plan_id = cumulative.plan_id
        and {{ valid_on('rates', 'cumulative.date_jst') }}
        and rates.day_type in ('all', cumulative.day_type)
        and {{ window_contains(
            'rates.start_minute', 'rates.end_minute', 'cumulative.start_minute'
        ) }}
        and rates.tier_from_kwh <= cumulative.kwh_after
        and (rates.tier_to_kwh is null or rates.tier_to_kwh > cumulative.kwh_before)

),

energy_charges as (

    select
        source,
        bucket_start_utc,
        coalesce(
            string_agg(rate_kind, '+' order by tier_from_kwh) filter (where tier_kwh > 0),
            min(rate_kind)
        ) as rate_kind,
        sum(tier_kwh * yen_per_kwh) as energy_charge_yen,
        -- The rate paid on average; with no energy, the rate of the tier the period is in.
        case
            when sum(tier_kwh) > 0 then sum(tier_kwh * yen_per_kwh) / sum(tier_kwh)
            else min(yen_per_kwh)
        end as energy_rate_yen_per_kwh
    from tier_shares
    group by source, bucket_start_utc

),

priced as (

    select
        cumulative.*,
        energy_charges.rate_kind,
        energy_charges.energy_rate_yen_per_kwh,
        energy_charges.energy_charge_yen,
        -- Without an energy rate there is no price at all: every yen column stays NULL.
        case
            when energy_charges.energy_charge_yen is not null
                then cumulative.energy_kwh * coalesce(fuel.yen_per_kwh, 0)
        end as fuel_adjustment_yen,
        case
            when energy_charges.energy_charge_yen is not null
                then cumulative.energy_kwh * coalesce(renewable.yen_per_kwh, 0)
        end as renewable_surcharge_yen,
        case
            when energy_charges.energy_charge_yen is not null
                then cumulative.export_kwh * coalesce(export.yen_per_kwh, 0)
        end as export_credit_yen
    from cumulative
    left join energy_charges
        on energy_charges.source = cumulative.source
        and energy_charges.bucket_start_utc = cumulative.bucket_start_utc
    left join plans on plans.plan_id = cumulative.plan_id
    left join {{ ref('tariff_fuel_adjustments') }} as fuel
        on fuel.provider = plans.provider
        and {{ valid_on('fuel', 'cumulative.date_jst') }}
    left join {{ ref('tariff_renewable_surcharges') }} as renewable
        on {{ valid_on('renewable', 'cumulative.date_jst') }}
    left join {{ ref('tariff_export_rates') }} as export
        on export.plan_id = cumulative.plan_id
        and {{ valid_on('export', 'cumulative.date_jst') }}

),

-- Yen are kept to 1e-6 (micro-yen) so that every build gives the same figures; the bill
-- rounds to whole yen (fct_billing_period).
final as (

    select
        source,
        date_jst,
        bucket_start_utc,
        bucket_start_jst,
        plan_id,
        energy_kwh,
        export_kwh,
        rate_kind,
        round(energy_rate_yen_per_kwh, 6) as energy_rate_yen_per_kwh,
        round(energy_charge_yen, 6) as energy_charge_yen,
        round(fuel_adjustment_yen, 6) as fuel_adjustment_yen,
        round(renewable_surcharge_yen, 6) as renewable_surcharge_yen,
        round(export_credit_yen, 6) as export_credit_yen,
        round(energy_charge_yen, 6) + round(fuel_adjustment_yen, 6)
        + round(renewable_surcharge_yen, 6) as cost_yen,
        period_start,
        day_type,
        kwh_after as period_kwh_so_far,
        '{{ fingerprint }}' as tariff_fingerprint
    from priced
    {%- if rebuild %}
    where date_jst between date '{{ rebuild.first_date }}' and date '{{ rebuild.last_date }}'
    {%- endif %}

)

select * from final
