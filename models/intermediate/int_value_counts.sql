{#-
  The frequency table of the batches being built: rows per batch, monitored
  column and value (macros/value_counts.sql), counted in one scan of
  int_trips_scored. column_quality and feature_drift derive their figures
  from it; on a 3-million-row batch it holds a few hundred thousand rows (the
  prediction has the most distinct values), so their quantiles, means and PSI
  bins are computed on those, not on every trip again.
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}',
          post_hook='analyze {{ this }}') }}  {#- rebuilt by every build: no WAL #}
{%- set monitoring = var('monitoring') -%}
{%- set numeric_columns = [] -%}
{%- for column in monitoring.numeric_features + [monitoring.prediction, monitoring.target] if column not in numeric_columns -%}
    {%- do numeric_columns.append(column) -%}
{%- endfor %}

{{ modelwatch.value_counts(ref('int_trips_scored'), ['batch_date'], numeric_columns, monitoring.categorical_features) }}
