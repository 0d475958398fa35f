{#-
  The numeric columns profiled from their rows (macros/value_counts.sql:
  numeric_columns_from_rows, those with about as many values as rows), one row
  per batch being built and column: what column_quality, feature_drift and the
  reference checks would otherwise read off int_value_counts, whose frequency
  table for such a column is as long as the batch.
  One scan of the batch's rows (int_batch_rows) sorts each column's finite values into an array
  (one sort per column, not one per figure); every figure is then read off it:
  quantiles at percentile_cont's positions with its interpolation (the same
  float8 arithmetic, so equal to the last bit), counts at or below a bound by
  binary search (width_bucket), and so the rows per PSI bin of the batch's
  reference set and those outside its range.
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}',
          post_hook='analyze {{ this }}') }}  {#- rebuilt by every build: no WAL #}
{%- set m = modelwatch.monitor() -%}
{%- set columns = modelwatch.numeric_columns_from_rows(modelwatch.rows_relation(m), modelwatch.numeric_columns(m)) -%}
{%- set quantiles = [5, 25, 50, 75, 95] -%}
{%- set float = dbt.type_float() -%}
{#- Which columns is known only when the model runs (the statistics of the rows): the refs below are declared here. #}
-- depends_on: {{ ref('int_batch_rows') }}, {{ ref('stg_batches') }}, {{ ref('int_reference_profile') }}, {{ ref('int_reference_bins') }}

{%- if not columns %}
{#- Nothing profiled from rows: no rows, with the columns' types. #}
select
    cast(null as {{ dbt.type_string() }}) as monitor,
    cast(null as date) as batch_date,
    cast(null as {{ dbt.type_string() }}) as column_name,
    cast(null as bigint) as row_count,
    cast(null as bigint) as missing_count,
    cast(null as bigint) as non_finite_count,
    cast(null as bigint) as present_count,
    cast(null as {{ float }}) as min_value,
    {% for q in quantiles -%}
    cast(null as {{ float }}) as p{{ '%02d' % q }},
    {% endfor -%}
    cast(null as {{ float }}) as max_value,
    cast(null as {{ float }}) as mean_value,
    cast(null as {{ float }}) as stddev_value,
    cast(null as bigint) as outside_reference_count,
    cast(null as bigint[]) as bin_counts
where false
{%- else %}

with batches as (
    select batch_date, reference_version
    from {{ ref('stg_batches') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

{#- Each row's values as numbers, and as finite numbers (null otherwise), computed once per row:
    the aggregates below read them rather than testing finiteness each (hundreds of tests a row
    on a wide monitor). -#}
batch_values as (
    select
        batch_rows.batch_date
        {%- for column in columns %}
        {%- set value = 'cast(batch_rows.' ~ column ~ ' as ' ~ float ~ ')' %},
        {{ value }} as {{ column }},
        case when {{ modelwatch.is_finite(value) }} then {{ value }} end as {{ column }}__finite
        {%- endfor %}
    from {{ ref('int_batch_rows') }} as batch_rows
    {{ modelwatch.evaluated_once() }}
),

{#- Per batch, each column's missing and non-finite counts, its finite values sorted, their
    mean and sample standard deviation (one batch: no grouping, so no sort of its rows). #}
aggregated as (
    select
        {{ modelwatch.batch_start() if modelwatch.one_batch() else 'batch_values.batch_date' }} as batch_date,
        count(*) as row_count
        {%- for column in columns %}
        {%- set finite = 'batch_values.' ~ column ~ '__finite' %},
        count(*) - count(batch_values.{{ column }}) as {{ column }}__missing,
        count(batch_values.{{ column }}) - count({{ finite }}) as {{ column }}__non_finite,
        array_agg({{ finite }} order by {{ finite }}) filter (where {{ finite }} is not null) as {{ column }}__values,
        avg({{ finite }}) as {{ column }}__mean,
        stddev_samp({{ finite }}) as {{ column }}__stddev
        {%- endfor %}
    from batch_values
    {% if modelwatch.one_batch() -%}
    having count(*) > 0
    {%- else -%}
    group by batch_values.batch_date
    {%- endif %}
),

profiled as (
    select
        aggregated.batch_date,
        batches.reference_version,
        per_column.column_name,
        aggregated.row_count,
        per_column.missing_count,
        per_column.non_finite_count,
        per_column.finite_values,
        coalesce(cardinality(per_column.finite_values), 0) as present_count,
        per_column.mean_value,
        per_column.stddev_value
    from aggregated
    inner join batches on batches.batch_date = aggregated.batch_date
    cross join lateral (
        values
        {%- for column in columns %}
        (cast('{{ column }}' as {{ dbt.type_string() }}), {{ column }}__missing, {{ column }}__non_finite,
         {{ column }}__values, {{ column }}__mean, {{ column }}__stddev){{ ',' if not loop.last }}
        {%- endfor %}
    ) as per_column (column_name, missing_count, non_finite_count, finite_values, mean_value, stddev_value)
),

reference_ranges as (
    select reference_version, column_name, min_value, max_value
    from {{ ref('int_reference_profile') }}
    where monitor = '{{ m.name }}' and category is null
),

reference_bins as (
    select reference_version, column_name, bin_index, bin_kind, lower_bound, upper_bound
    from {{ ref('int_reference_bins') }}
    where monitor = '{{ m.name }}'
)

{#- Rows at or below a bound: width_bucket counts the sorted values <= its operand. #}
{%- set at_most = 'width_bucket({bound}, profiled.finite_values)' %}
select
    cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
    profiled.batch_date,
    profiled.column_name,
    cast(profiled.row_count as bigint) as row_count,
    cast(profiled.missing_count as bigint) as missing_count,
    cast(profiled.non_finite_count as bigint) as non_finite_count,
    cast(profiled.present_count as bigint) as present_count,
    profiled.finite_values[1] as min_value,
    {% for q in quantiles -%}
    {{ modelwatch.percentile_of_sorted('profiled.finite_values', 'profiled.present_count', q) }} as p{{ '%02d' % q }},
    {% endfor -%}
    profiled.finite_values[profiled.present_count] as max_value,
    profiled.mean_value,
    profiled.stddev_value,
    {#- Values below the reference's smallest (the count below a bound: those at or below it,
        less those equal to it when the last of them is) or above its largest. #}
    cast(coalesce((
        select
            case
                when reference_ranges.min_value is null or profiled.present_count = 0 then 0
                when {{ at_most.format(bound='reference_ranges.min_value') }} = 0 then 0
                when profiled.finite_values[{{ at_most.format(bound='reference_ranges.min_value') }}] < reference_ranges.min_value
                    then {{ at_most.format(bound='reference_ranges.min_value') }}
                else array_position(profiled.finite_values, reference_ranges.min_value) - 1
            end
            + case
                when reference_ranges.max_value is null or profiled.present_count = 0 then 0
                else profiled.present_count - {{ at_most.format(bound='reference_ranges.max_value') }}
            end
        from reference_ranges
        where reference_ranges.reference_version = profiled.reference_version
          and reference_ranges.column_name = profiled.column_name
    ), 0) as bigint) as outside_reference_count,
    {#- By bin_index: a range bin (lower, upper] holds the values at or below its upper bound
        less those at or below its lower one; the null bin the missing values. #}
    (
        select array_agg(cast(case reference_bins.bin_kind
            when 'null' then profiled.missing_count
            else coalesce({{ at_most.format(bound='reference_bins.upper_bound') }}, profiled.present_count)
                 - coalesce({{ at_most.format(bound='reference_bins.lower_bound') }}, 0)
        end as bigint) order by reference_bins.bin_index)
        from reference_bins
        where reference_bins.reference_version = profiled.reference_version
          and reference_bins.column_name = profiled.column_name
    ) as bin_counts
from profiled
{%- endif %}
