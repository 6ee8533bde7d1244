{#-
  Checks a model's rows in one query (one dbt node, not one per column: every test is a node
  that costs the nightly build a tenth of a second): `unique_key` columns unique together,
  `not_null` columns never NULL, `non_negative` columns never below zero (NULL passes). Each
  failing row says which rule it broke and the key of the offending row.
-#}
{% test row_rules(model, unique_key, not_null=[], non_negative=[]) %}

{%- set row_key -%}
    concat_ws(', ', {% for column in unique_key -%}
        '{{ column }}=' || coalesce(cast({{ column }} as varchar), 'NULL')
        {{- ", " if not loop.last }}
    {%- endfor %})
{%- endset %}

select 'duplicate key (' || count(*) || ' rows)' as problem, {{ row_key }} as row_key
from {{ model }}
group by {{ unique_key | join(', ') }}
having count(*) > 1

{%- for column in not_null %}
union all
select '{{ column }} is NULL', {{ row_key }} from {{ model }} where {{ column }} is null
{%- endfor %}

{%- for column in non_negative %}
union all
select '{{ column }} is negative: ' || {{ column }}, {{ row_key }}
from {{ model }}
where {{ column }} < 0
{%- endfor %}

{% endtest %}
