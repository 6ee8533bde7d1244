-- One row per source and billing period holding energy data. A table rebuilt on every run:
-- it aggregates fct_daily_cost (one row per source and day), which takes milliseconds, and
-- which periods are open changes with every new day.
with contract_days as (

    select * from {{ ref('int_meter_contracts') }}

),

plans as (

    select * from {{ ref('tariff_plans') }}

),

basic_charges as (

    select * from {{ ref('tariff_basic_charges') }}

),

daily_costs as (

    select * from {{ ref('fct_daily_cost') }}

),

-- The contract size in the unit the plan's basic charge is priced by.
sized_contract_days as (

    select
        contract_days.*,
        case plans.contract_unit
            when 'amperes' then contract_days.contract_amperes
            else contract_days.contract_kva
        end as contract_size
    from contract_days
    inner join plans on plans.plan_id = contract_days.plan_id

),

-- The monthly basic charge in force each day: the plan version's row for the contract size,
-- else its row for any size (contract_size empty).
daily_basic_charges as (

    select
        days.source,
        days.date_jst,
        arg_min(
            basic_charges.yen_per_month + basic_charges.yen_per_unit * days.contract_size,
            basic_charges.contract_size is null
        ) as monthly_basic_charge_yen
    from sized_contract_days as days
    inner join basic_charges
        on basic_charges.plan_id = days.plan_id
        and {{ valid_on('basic_charges', 'days.date_jst') }}
        and (
            basic_charges.contract_size is null
            or basic_charges.contract_size = days.contract_size
        )
    group by days.source, days.date_jst

),

-- Each day of the period pays its share (1 / days in the period) of the monthly charge in
-- force that day: a whole period under one plan pays exactly the monthly charge.
period_basic_charges as (

    select
        contract_days.source,
        contract_days.period_start,
        sum(daily_basic_charges.monthly_basic_charge_yen)
        / any_value(contract_days.period_end - contract_days.period_start)
            as basic_charge_yen
    from contract_days
    left join daily_basic_charges
        on daily_basic_charges.source = contract_days.source
        and daily_basic_charges.date_jst = contract_days.date_jst
    group by contract_days.source, contract_days.period_start

),

last_days as (

    select
        source,
        max(date_jst) as last_date
    from daily_costs
    group by source

),

period_costs as (

    select
        daily_costs.source,
        contract_days.period_start,
        any_value(contract_days.period_end) as period_end,
        -- The contract of the period's last day with data (a struct: arg_max skips NULLs).
        arg_max(
            struct_pack(
                plan_id := contract_days.plan_id,
                contract_amperes := contract_days.contract_amperes,
                contract_kva := contract_days.contract_kva
            ),
            daily_costs.date_jst
        ) as last_contract,
        max(daily_costs.date_jst) as last_date_with_data,
        count(*) as days_with_data,
        sum(daily_costs.energy_kwh) as energy_kwh,
        sum(daily_costs.export_kwh) as export_kwh,
        sum(daily_costs.energy_charge_yen) as energy_charge_yen,
        sum(daily_costs.fuel_adjustment_yen) as fuel_adjustment_yen,
        sum(daily_costs.renewable_surcharge_yen) as renewable_surcharge_yen,
        sum(daily_costs.export_credit_yen) as export_credit_yen
    from daily_costs
    inner join contract_days
        on contract_days.source = daily_costs.source
        and contract_days.date_jst = daily_costs.date_jst
    group by daily_costs.source, contract_days.period_start

),

periods as (

    -- last_contract is a struct: sqlfluff takes its fields for tables (RF01) and the struct
    -- for an unqualified column (RF02).
    -- noqa: disable=RF01,RF02
    select
        period_costs.* exclude (last_contract),
        period_costs.last_contract.plan_id,
        period_costs.last_contract.contract_amperes,
        period_costs.last_contract.contract_kva,
        period_basic_charges.basic_charge_yen,
        plans.bill_rounding,
        period_costs.period_end - period_costs.period_start as days_in_period,
        -- Open until data reaches the period's last day.
        last_days.last_date < period_costs.period_end - 1 as is_open,
        -- An open period's energy-related charges are projected at the average daily rate so
        -- far: multiplied by days in the period / days with data (1 once closed).
        case
            when is_open then days_in_period / period_costs.days_with_data else 1
        end as projection_factor
    from period_costs
    inner join period_basic_charges
        on period_basic_charges.source = period_costs.source
        and period_basic_charges.period_start = period_costs.period_start
    inner join last_days on last_days.source = period_costs.source
    left join plans on plans.plan_id = period_costs.last_contract.plan_id
    -- noqa: enable=RF01,RF02

),

final as (

    select
        source,
        period_start,
        period_end,
        plan_id,
        contract_amperes,
        contract_kva,
        is_open,
        days_with_data,
        days_in_period,
        round(energy_kwh, 6) as energy_kwh,
        round(export_kwh, 6) as export_kwh,
        round(basic_charge_yen, 6) as basic_charge_yen,
        round(energy_charge_yen, 6) as energy_charge_yen,
        round(fuel_adjustment_yen, 6) as fuel_adjustment_yen,
        round(renewable_surcharge_yen, 6) as renewable_surcharge_yen,
        round(export_credit_yen, 6) as export_credit_yen,
        {{ bill_round(
            'basic_charge_yen + energy_charge_yen + fuel_adjustment_yen', 'bill_rounding'
        ) }}
        + {{ bill_round('renewable_surcharge_yen', 'bill_rounding') }} as total_yen,
        -- The basic charge of the days so far and the energy-related charges so far.
        round(
            basic_charge_yen * (last_date_with_data - period_start + 1) / days_in_period
            + energy_charge_yen + fuel_adjustment_yen + renewable_surcharge_yen,
            6
        ) as cost_so_far_yen,
        {{ bill_round(
            'basic_charge_yen + (energy_charge_yen + fuel_adjustment_yen) * projection_factor',
            'bill_rounding'
        ) }}
        + {{ bill_round('renewable_surcharge_yen * projection_factor', 'bill_rounding') }}
            as projected_total_yen,
        last_date_with_data
    from periods

)

select * from final
