{#-
  The trips of the batches being built, each with its prediction: the join is
  done once per build and kept as a table (unlogged: rebuilt by every build, so
  never worth WAL), which int_value_counts and int_model_performance then scan
  instead of joining again. Only the columns they and daily_trips read: the
  monitored ones (vars.monitoring) and a few more; half the width, half the
  writing. (batch_checks reads the trips themselves: no check needs a prediction.)
-#}
{{ config(materialized='table', unlogged=true, post_hook='analyze {{ this }}') }}  {#- statistics for the marts' plans #}
{%- set monitoring = var('monitoring') -%}
{#- Not the trip id: it only joins the two tables here, and nothing downstream reads it. -#}
{%- set wanted = ['batch_date', monitoring.timestamp, monitoring.target]
    + monitoring.numeric_features + monitoring.categorical_features + monitoring.zone_columns
    + ['pickup_datetime', 'duration_min', 'trip_distance', 'fare_amount', 'total_amount', 'pu_location_id'] -%}
{%- set columns = [] -%}
{%- for column in wanted if column not in columns and column != monitoring.prediction -%}
    {%- do columns.append(column) -%}
{%- endfor %}

with trips as (
    select trip_id, {{ columns | join(', ') }}
    from {{ ref('stg_trips') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
),

predictions as (
    select * from {{ ref('stg_predictions') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
)

select
    {%- for column in columns %}
    trips.{{ column }},
    {%- endfor %}
    predictions.model_version,
    predictions.predicted_duration_min
from trips
left join predictions
    on predictions.batch_date = trips.batch_date
    and predictions.trip_id = trips.trip_id
