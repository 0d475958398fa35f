{#-
  What the monitor's reference sets hold, for the contract's checks against
  them: per numeric drift column its range (min, max), per categorical one every
  category seen. Incremental like int_reference_bins: each reference version once,
  when a reference set is stored, and again then if the monitor's columns changed.
-#}
{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['monitor', 'reference_version'], tags=['reference'],
          pre_hook='{{ modelwatch.build_work_mem() }}') }}
{%- set m = modelwatch.monitor() -%}
{%- set numeric_columns = modelwatch.drift_numeric_columns(m) -%}
{%- set categorical_columns = modelwatch.drift_categorical_columns(m) -%}
{#- What was profiled, stored with it: a monitor that declares other columns is profiled again. -#}
{%- set profiled = 'numeric: ' ~ numeric_columns | join(',') ~ '; categorical: ' ~ categorical_columns | join(',') -%}

with {{ modelwatch.reference_versions_to_do(ref('int_reference_rows'),
                                            "monitor = '" ~ m.name ~ "' and profiled = '" ~ profiled ~ "'") }},

{#- Categories from a frequency table; numbers from min and max alone (a frequency table of a
    continuous column is as long as the reference). #}
counts as (
    {{ modelwatch.value_counts('reference', ['reference_version'], [], categorical_columns) }}
){%- if numeric_columns %},

ranges as (
    select
        reference_version
        {%- for column in numeric_columns %}
        {%- set value = 'cast(' ~ column ~ ' as ' ~ dbt.type_float() ~ ')' %},
        min({{ value }}) filter (where {{ modelwatch.is_finite(value) }}) as {{ column }}__min,
        max({{ value }}) filter (where {{ modelwatch.is_finite(value) }}) as {{ column }}__max
        {%- endfor %}
    from reference
    group by reference_version
){%- endif %}

{%- if numeric_columns %}
select
    cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
    ranges.reference_version,
    cast(per_column.column_name as {{ dbt.type_string() }}) as column_name,
    cast(per_column.min_value as {{ dbt.type_float() }}) as min_value,
    cast(per_column.max_value as {{ dbt.type_float() }}) as max_value,
    cast(null as {{ dbt.type_string() }}) as category,
    cast('{{ profiled }}' as {{ dbt.type_string() }}) as profiled
from ranges
cross join lateral (
    values
    {%- for column in numeric_columns %}
    ('{{ column }}', {{ column }}__min, {{ column }}__max){{ ',' if not loop.last }}
    {%- endfor %}
) as per_column (column_name, min_value, max_value)

union all
{%- endif %}

select
    cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
    reference_version,
    cast(column_name as {{ dbt.type_string() }}) as column_name,
    cast(null as {{ dbt.type_float() }}) as min_value,
    cast(null as {{ dbt.type_float() }}) as max_value,
    category,
    cast('{{ profiled }}' as {{ dbt.type_string() }}) as profiled
from counts
where column_name in ('{{ categorical_columns | join("', '") }}')
  and category is not null
