{#-
  The rows of the monitor's batches being built (vars monitor, batch_start..batch_end),
  from raw.<monitor>__rows, with the monitor's derived columns computed: kept as a
  table (unlogged: rebuilt by every build, so never worth WAL) that
  int_value_counts, int_model_performance and the monitor's own marts scan instead
  of the raw rows again. Only the columns they read: the profiled ones, the derived
  ones and those the performance filter names. (batch_checks reads the raw rows
  themselves: a custom check may name any column.)
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}',
          post_hook='{{ modelwatch.analyze_numeric_columns(this) }}') }}  {#- statistics for the marts' plans #}
{%- set m = modelwatch.monitor() -%}
{%- set columns = modelwatch.unique_list(
    modelwatch.numeric_columns(m) + modelwatch.categorical_columns(m)
    + ((m.get('derived') or {}).keys() | list)
    + modelwatch.columns_named_in(m, m.get('performance_where'))) -%}

{{ modelwatch.monitor_rows(m, modelwatch.labelled_rows_relation(m), 'batch_date', modelwatch.in_batch_range('batch_date'), columns) }}
