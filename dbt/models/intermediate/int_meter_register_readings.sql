-- The cumulative kWh readings in long form: one row per source, register and reading that
-- carries that register. A reading without the field (NULL) is simply absent, so it neither
-- starts nor ends an energy interval. The import register carries the instantaneous power read
-- with it, which estimates the energy of an interval whose counter is discontinuous.
with readings as (

    select * from {{ ref('stg_meter_readings') }}

),

import_readings as (

    select
        source,
        'import' as register,
        ts_utc,
        energy_import_kwh as kwh,
        instant_power_w
    from readings
    where energy_import_kwh is not null

),

export_readings as (

    -- The power read is what the house draws, not what it exports: no estimate for export.
    select
        source,
        'export' as register,
        ts_utc,
        energy_export_kwh as kwh,
        null::double as instant_power_w
    from readings
    where energy_export_kwh is not null

),

register_readings as (

    select * from import_readings
    union all
    select * from export_readings

)

select * from register_readings
