{#-
  The rows of the monitor's batches being built (vars monitor, batch_start..batch_end),
  from raw.<monitor>__rows, with their late labels (macros/labels.sql) and the
  monitor's derived columns computed. Ephemeral: int_value_counts,
  int_numeric_profile, int_model_performance and the monitor's own marts each scan
  the batch's raw rows themselves (by the batch_date index), which costs less than
  writing them to a table first and reading that, and they start at once instead of
  after it. Only the columns they read: the profiled ones, the derived ones and
  those the performance filter names. (batch_checks reads the raw rows themselves: a
  custom check may name any column.)
-#}
{{ config(materialized='ephemeral') }}
{%- set m = modelwatch.monitor() -%}
{%- set columns = modelwatch.unique_list(
    modelwatch.numeric_columns(m) + modelwatch.categorical_columns(m)
    + ((m.get('derived') or {}).keys() | list)
    + modelwatch.columns_named_in(m, m.get('performance_where'))) -%}

{{ modelwatch.monitor_rows(m, modelwatch.labelled_rows_relation(m), 'batch_date', modelwatch.in_batch_range('batch_date'), columns) }}
