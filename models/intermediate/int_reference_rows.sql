{#-
  The monitor's reference sets (every version), from
  raw.<monitor>__reference, with its derived columns: what the reference models
  read, made when a reference set is stored (`modelwatch reference`, or `train`
  for a monitor with a model), not by every build.
-#}
{{ config(materialized='table', unlogged=true, tags=['reference'],
          post_hook="{{ modelwatch.analyze_numeric_columns(this, 'reference_version', modelwatch.drift_numeric_columns(), modelwatch.drift_categorical_columns()) }}") }}
{%- set m = modelwatch.monitor() -%}
{%- set columns = modelwatch.unique_list(
    modelwatch.drift_numeric_columns(m) + modelwatch.drift_categorical_columns(m)) -%}

{{ modelwatch.monitor_rows(m, modelwatch.reference_relation(m), 'reference_version', 'true', columns) }}
