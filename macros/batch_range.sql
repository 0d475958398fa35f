{#- The batches this invocation builds: vars batch_start..batch_end (a single batch has both equal). -#}
{% macro batch_start() -%}
    {{ return(modelwatch.batch_date_literal(var('batch_start'))) }}
{%- endmacro %}

{% macro batch_end() -%}
    {{ return(modelwatch.batch_date_literal(var('batch_end'))) }}
{%- endmacro %}

{#- Whether this invocation builds one batch: its rows need no grouping by batch (nor the sort
    a grouping of ordered aggregates takes). -#}
{% macro one_batch() -%}
    {{ return((var('batch_start') | string) == (var('batch_end') | string)) }}
{%- endmacro %}

{% macro in_batch_range(column='batch_date') -%}
    {{ column }} between {{ modelwatch.batch_start() }} and {{ modelwatch.batch_end() }}
{%- endmacro %}

{#- A var that is not an ISO date never reaches SQL. -#}
{% macro batch_date_literal(value) -%}
    {%- set text = value | string -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
        {{ exceptions.raise_compiler_error("batch date var must be YYYY-MM-DD, got " ~ text) }}
    {%- endif -%}
    {{ return("cast('" ~ text ~ "' as date)") }}
{%- endmacro %}
