{#- Minutes from one timestamp to another (negative when the second is earlier). -#}
{% macro minutes_between(start_column, end_column) -%}
    {{ return(adapter.dispatch('minutes_between', 'modelwatch')(start_column, end_column)) }}
{%- endmacro %}

{% macro default__minutes_between(start_column, end_column) -%}
    cast({{ dbt.datediff(start_column, end_column, 'second') }} as {{ dbt.type_float() }}) / 60.0
{%- endmacro %}

{% macro postgres__minutes_between(start_column, end_column) -%}
    cast(extract(epoch from ({{ end_column }} - {{ start_column }})) as {{ dbt.type_float() }}) / 60.0
{%- endmacro %}
