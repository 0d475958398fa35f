{#-
  The trips of the batches being built, each with its prediction: the join is
  done once per build and kept as a table (unlogged: rebuilt by every build, so
  never worth WAL), which every mart then scans instead of joining again.
-#}
{{ config(materialized='table', unlogged=true) }}

with trips as (
    select * from {{ ref('stg_trips') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
),

predictions as (
    select * from {{ ref('stg_predictions') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
)

select
    trips.*,
    predictions.model_version,
    predictions.predicted_duration_min
from trips
left join predictions
    on predictions.batch_date = trips.batch_date
    and predictions.trip_id = trips.trip_id
