{#-
  Fails for every key whose total in this model differs from the sum of `parts_column` over
  the rows of `parts` with the same key, beyond `tolerance`. A key missing on one side counts
  as NULL there; NULL on both sides (nothing measured) agrees, NULL on one side only fails.
-#}
{% test equals_sum_of(model, column_name, parts, parts_column, keys, tolerance=0.000001) %}

with totals as (
    select {{ keys | join(', ') }}, {{ column_name }} as total
    from {{ model }}
),

parts_totals as (
    select {{ keys | join(', ') }}, sum({{ parts_column }}) as parts_total
    from {{ parts }}
    group by {{ keys | join(', ') }}
),

compared as (
    select
        {% for key in keys -%}
        coalesce(totals.{{ key }}, parts_totals.{{ key }}) as {{ key }},
        {% endfor -%}
        totals.total,
        parts_totals.parts_total
    from totals
    full outer join parts_totals
        on {% for key in keys -%}
            totals.{{ key }} = parts_totals.{{ key }}{{ " and " if not loop.last }}
        {%- endfor %}
)

select *
from compared
where (total is null) != (parts_total is null)
    or abs(total - parts_total) > {{ tolerance }}

{% endtest %}
