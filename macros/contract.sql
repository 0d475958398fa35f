{#-
  The contract's checks as rows of batch_checks: a measured value per batch and
  its bounds, from the monitor's declaration (contract: built-in checks, with
  per-column overrides under `columns`; checks: the monitor's own). `passed` is
  computed in batch_checks.
-#}

{#- A check's bounds and severity, a column's override merged over them. -#}
{% macro check_spec(m, check_name, column_name=none) -%}
    {%- set spec = (m.get('contract') or {}).get(check_name) or (m.get('checks') or {}).get(check_name) -%}
    {%- if spec is none -%}
        {{ exceptions.raise_compiler_error("monitor " ~ m.name ~ " has no check " ~ check_name) }}
    {%- endif -%}
    {%- set per_column = spec.get('columns') if spec.get('columns') is mapping else {} -%}
    {%- if column_name and column_name in per_column -%}
        {{ return(modelwatch.deep_merge(spec, per_column[column_name])) }}
    {%- endif -%}
    {{ return(spec) }}
{%- endmacro %}

{#- A check measured on the rows of `from`, as a select. -#}
{% macro contract_check(m, check_name, measured, from, column_name='') -%}
    select
        batch_date,
        {{ modelwatch.contract_fields(m, check_name, measured, column_name) }}
    from {{ from }}
{%- endmacro %}

{#- A check as a row of a VALUES list (batch_checks' checks of one source): its name, column,
    measured value, bounds and severity. -#}
{% macro contract_row(m, check_name, measured, column_name='') -%}
    ({{ modelwatch.contract_fields(m, check_name, measured, column_name, named=false) }})
{%- endmacro %}

{% macro contract_fields(m, check_name, measured, column_name='', named=true) -%}
    {%- set spec = modelwatch.check_spec(m, check_name, column_name) -%}
    {%- set lower = spec.get('min') -%}
    {%- set upper = spec.get('max') -%}
    {%- set string, float = dbt.type_string(), dbt.type_float() -%}
    cast('{{ check_name }}' as {{ string }}){{ ' as check_name' if named }},
    cast('{{ column_name }}' as {{ string }}){{ ' as column_name' if named }},
    cast({{ measured }} as {{ float }}){{ ' as measured_value' if named }},
    cast({{ 'null' if lower is none else lower }} as {{ float }}){{ ' as lower_bound' if named }},
    cast({{ 'null' if upper is none else upper }} as {{ float }}){{ ' as upper_bound' if named }},
    cast('{{ spec.get('severity', 'error') }}' as {{ string }}){{ ' as severity' if named }}
{%- endmacro %}

{#- Share of rows matching a condition; null for an empty batch. -#}
{% macro share_where(condition) -%}
    cast(count(*) filter (where {{ condition }}) as {{ dbt.type_float() }}) / nullif(count(*), 0)
{%- endmacro %}

{#- The monitor's batches of the range that pass every error-severity check: the gate. -#}
{% macro passing_batches() -%}
    select batch_date
    from {{ ref('batch_checks') }}
    where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }}
    group by batch_date
    having bool_and(passed or severity <> 'error')
{%- endmacro %}
