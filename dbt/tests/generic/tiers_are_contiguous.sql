{#-
  Fails for every tier of a time-of-use window (plan version, day type, window) that does not
  start where the previous one ended (the first at 0 kWh), that is empty, or that is not the
  last yet has no upper bound; and for every window whose last tier has an upper bound.
-#}
{% test tiers_are_contiguous(model) %}

with tiers as (
    select
        plan_id, valid_from, day_type, window_start, window_end, tier_from_kwh, tier_to_kwh,
        lag(tier_to_kwh) over window_tiers as previous_to_kwh,
        row_number() over window_tiers as tier_number,
        lead(tier_from_kwh) over window_tiers is null as is_last
    from {{ model }}
    window window_tiers as (
        partition by plan_id, valid_from, day_type, window_start, window_end
        order by tier_from_kwh
    )
),

problems as (
    select
        *,
        case
            when tier_number = 1 and tier_from_kwh != 0 then 'the first tier must start at 0 kWh'
            when tier_number > 1 and previous_to_kwh is null
                then 'only the last tier may have no upper bound'
            when tier_number > 1 and tier_from_kwh != previous_to_kwh
                then 'tier starts at ' || tier_from_kwh || ' kWh but the previous ends at '
                    || previous_to_kwh || ' kWh'
            when tier_to_kwh <= tier_from_kwh then 'the tier is empty'
            when is_last and tier_to_kwh is not null
                then 'the last tier must have no upper bound (tier_to_kwh empty)'
        end as problem
    from tiers
)

select * from problems where problem is not null

{% endtest %}
