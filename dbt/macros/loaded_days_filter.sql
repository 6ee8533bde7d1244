{#-
  Tests of the raw readings check only the days being loaded in an incremental build.

  Their `where` config is the placeholder `__loaded_days__` (models/staging/_sources.yml),
  replaced here when the test runs, through dbt's documented hook for a test's `where`: by the
  loaded days as an instant range on ts_utc, or by `true` in a full build. A day is replaced
  whole, so a duplicate or a negative reading can only come in with the days being loaded; the
  other days were tested when they were loaded. Without this, every nightly build would test the
  whole history again (tens of seconds for ten years).
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- set where = where | replace('__loaded_days__', loaded_days_filter()) -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#- The instants of the requested days, or `true`. Never while dbt parses: the days change
    every night, and the parse must not depend on them (see macro loaded_days). -#}
{% macro loaded_days_filter() -%}
    {%- set days = requested_days() if execute else none -%}
    {%- if days is none -%}
        true
    {%- else -%}
        ts_utc >= {{ local_midnight("date '" ~ days.first_date ~ "'") }}
        and ts_utc < {{ local_midnight("date '" ~ days.last_date ~ "' + 1") }}
    {%- endif -%}
{%- endmacro %}
