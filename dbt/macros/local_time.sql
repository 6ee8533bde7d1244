{#-
  The only two places the pipeline time zone (var `tz`) enters the SQL. Both convert
  explicitly, so results never depend on the session's TimeZone setting (a view is
  evaluated in the reader's session, which may be UTC or anything else).
-#}

{#- An instant (TIMESTAMPTZ) as the naive wall-clock time in the pipeline time zone. -#}
{% macro to_local(instant) -%}
    timezone('{{ var("tz") }}', {{ instant }})
{%- endmacro %}

{#- The instant (TIMESTAMPTZ) at which a local date begins in the pipeline time zone. -#}
{% macro local_midnight(local_date) -%}
    timezone('{{ var("tz") }}', cast({{ local_date }} as timestamp))
{%- endmacro %}
