{#-
  Fails for every plan version, day type and half hour of the day that no time-of-use window
  covers, or that more than one covers, and for every row whose window is not two local times
  'HH:MM' on the half hour ('24:00' may end a window; an end before the start wraps past
  midnight). A day type's windows are its own rows plus the 'all' rows. Each failing row names
  the plan, version, day type and time.
-#}
{% test time_of_use_windows_cover_the_day(model) %}

with rates as (
    select
        plan_id, valid_from, day_type, window_start, window_end,
        {{ hhmm_minutes('window_start') }} as start_minute,
        {{ hhmm_minutes('window_end') }} as end_minute
    from {{ model }}
),

windows as (
    select distinct plan_id, valid_from, day_type, start_minute, end_minute
    from rates
    where start_minute is not null and end_minute is not null
),

day_types as (
    select unnest(['weekday', 'weekend', 'holiday']) as day_type
),

versions as (
    select distinct plan_id, valid_from from rates
),

slots as (
    select versions.plan_id, versions.valid_from, day_types.day_type, slot.minute
    from versions
    cross join day_types
    cross join (select unnest(range(0, 1440, 30)) as minute) as slot
),

slot_windows as (
    select
        slots.plan_id, slots.valid_from, slots.day_type, slots.minute,
        count(windows.plan_id) as window_count
    from slots
    left join windows
        on windows.plan_id = slots.plan_id
        and windows.valid_from = slots.valid_from
        and windows.day_type in ('all', slots.day_type)
        and {{ window_contains('windows.start_minute', 'windows.end_minute', 'slots.minute') }}
    group by all
),

problems as (
    select
        plan_id, valid_from, day_type,
        printf('%02d:%02d', minute // 60, minute % 60) as local_time,
        case
            when window_count = 0 then 'no time-of-use window covers this half hour'
            else window_count || ' time-of-use windows cover this half hour'
        end as problem
    from slot_windows
    where window_count != 1

    union all

    select
        plan_id, valid_from, day_type, window_start || '-' || window_end as local_time,
        'window times must be HH:MM on the half hour, 00:00 to 24:00, start != end' as problem
    from rates
    where start_minute is null or end_minute is null or start_minute = end_minute
        or start_minute = 1440
)

select * from problems
order by plan_id, valid_from, day_type, local_time

{% endtest %}
