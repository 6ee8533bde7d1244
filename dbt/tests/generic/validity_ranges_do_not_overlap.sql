{#-
  Fails for every row whose [valid_from, valid_to) is empty or overlaps another version's range
  with the same `keys`. Rows with the same keys and the same range are one version (e.g. the
  tiers of one price list); NULL valid_to is open-ended. Each failing row says which.
-#}
{% test validity_ranges_do_not_overlap(model, keys) %}

{%- set version_columns = keys + ['valid_from', 'valid_to'] %}
with versions as (
    select distinct {{ version_columns | join(', ') }}
    from {{ model }}
),

problems as (
    select
        {{ version_columns | join(', ') }},
        'valid_to is not after valid_from' as problem
    from versions
    where valid_to <= valid_from

    union all

    select
        {% for key in keys -%} this.{{ key }}, {% endfor -%}
        this.valid_from, this.valid_to,
        'overlaps the version valid from ' || other.valid_from
            || ' to ' || coalesce(cast(other.valid_to as varchar), 'open') as problem
    from versions as this
    join versions as other
        on {% for key in keys -%}
            this.{{ key }} is not distinct from other.{{ key }} and {% endfor -%}
        (this.valid_from, coalesce(this.valid_to, date '9999-12-31'))
            != (other.valid_from, coalesce(other.valid_to, date '9999-12-31'))
        and this.valid_from < coalesce(other.valid_to, date '9999-12-31')
        and other.valid_from < coalesce(this.valid_to, date '9999-12-31')
)

select * from problems

{% endtest %}
