{#-
  One row of batch_checks: a measured value and its bounds from
  var('contract')[check_name]. `passed` is computed in batch_checks.
-#}
{% macro contract_check(check_name, measured, from, column_name='') -%}
    {%- set spec = var('contract')[check_name] -%}
    select
        batch_date,
        cast('{{ check_name }}' as text) as check_name,
        cast('{{ column_name }}' as text) as column_name,
        cast({{ measured }} as {{ dbt.type_float() }}) as measured_value,
        cast({{ spec.get('min', 'null') }} as {{ dbt.type_float() }}) as lower_bound,
        cast({{ spec.get('max', 'null') }} as {{ dbt.type_float() }}) as upper_bound,
        cast('{{ spec.severity }}' as text) as severity
    from {{ from }}
{%- endmacro %}

{#- Share of rows matching a condition; null for an empty batch. -#}
{% macro share_where(condition) -%}
    cast(count(*) filter (where {{ condition }}) as {{ dbt.type_float() }}) / nullif(count(*), 0)
{%- endmacro %}

{#- The batches of the range that pass every error-severity check: the gate. -#}
{% macro passing_batches() -%}
    select batch_date
    from {{ ref('batch_checks') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
    group by batch_date
    having bool_and(passed or severity <> 'error')
{%- endmacro %}
