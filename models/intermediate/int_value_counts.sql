{#-
  The frequency table of the batches being built: rows per batch, profiled
  column and value (macros/value_counts.sql), counted in one scan of
  int_batch_rows. column_quality and feature_drift derive their figures from
  it; on a 3-million-row batch it holds a few hundred thousand rows, so their
  quantiles, means and PSI bins are computed on those, not on every row again.
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}',
          post_hook='analyze {{ this }}') }}  {#- rebuilt by every build: no WAL #}
{%- set m = modelwatch.monitor() -%}

{#- Numeric columns with about as many values as rows are profiled from their rows instead
    (int_numeric_profile): their frequency table would be as long as the batch. #}
{%- set from_rows = modelwatch.numeric_columns_from_rows(modelwatch.rows_relation(m), modelwatch.numeric_columns(m)) -%}

{#- The monitor is the same in every row (a grouping key of text would cost a third of the
    time), and so is the batch when one is built. #}
select
    cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
    {% if modelwatch.one_batch() %}{{ modelwatch.batch_start() }} as batch_date,{% endif %}
    counts.*
from (
    {{ modelwatch.value_counts(ref('int_batch_rows'), [] if modelwatch.one_batch() else ['batch_date'],
                               modelwatch.numeric_columns(m) | reject('in', from_rows) | list,
                               modelwatch.categorical_columns(m)) }}
) as counts
