with source as (

    select * from {{ source('raw', 'raw_meter_readings') }}

),

renamed as (

    select
        ts_utc,
        -- Local time recomputed from the instant in the configured zone (var tz), so that it
        -- always agrees with date_jst and never depends on the reader's session TimeZone.
        {{ to_local('ts_utc') }} as ts_jst,
        cast({{ to_local('ts_utc') }} as date) as date_jst,
        cast(source as varchar) as source,
        cast(instant_power_w as double) as instant_power_w,
        cast(energy_import_kwh as double) as energy_import_kwh,
        cast(energy_export_kwh as double) as energy_export_kwh,
        ingested_at

    from source

)

select * from renamed
