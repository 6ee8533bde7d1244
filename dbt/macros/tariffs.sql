{#-
  Helpers for the tariff seeds and the cost marts. Time-of-use windows are 'HH:MM' strings on the half
  hour; '24:00' ends a window at midnight, and an end before the start wraps past midnight.
-#}

{#- Minutes since local midnight of an 'HH:MM' string, or NULL when it is not on the half hour
    between 00:00 and 24:00. -#}
{% macro hhmm_minutes(hhmm) -%}
    case
        when regexp_full_match({{ hhmm }}, '([01][0-9]|2[0-3]):(00|30)|24:00')
            then cast(left({{ hhmm }}, 2) as integer) * 60 + cast(right({{ hhmm }}, 2) as integer)
    end
{%- endmacro %}

{#- Whether the window [start_minute, end_minute) contains minute of the day `minute`. -#}
{% macro window_contains(start_minute, end_minute, minute) -%}
    case
        when {{ start_minute }} < {{ end_minute }}
            then {{ minute }} >= {{ start_minute }} and {{ minute }} < {{ end_minute }}
        else {{ minute }} >= {{ start_minute }} or {{ minute }} < {{ end_minute }}
    end
{%- endmacro %}

{#- Whether a row valid over [valid_from, valid_to) (NULL valid_to: open) applies on a date. -#}
{% macro valid_on(relation, local_date) -%}
    {{ local_date }} >= {{ relation }}.valid_from
    and ({{ relation }}.valid_to is null or {{ local_date }} < {{ relation }}.valid_to)
{%- endmacro %}

{#-
  Whole yen as a plan's bill rounds (tariff_plans.bill_rounding: floor, round or ceil). The
  figure is first rounded to 1e-6 yen, so that 2000 computed as 1999.9999999998 bills 2000.
-#}
{% macro bill_round(yen, rounding) -%}
    case {{ rounding }}
        when 'floor' then floor(round({{ yen }}, 6))
        when 'ceil' then ceil(round({{ yen }}, 6))
        else round({{ yen }}, 0)
    end
{%- endmacro %}
