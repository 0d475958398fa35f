{#-
  One row per batch and model version, for batches that passed the contract
  (gated): error of the predicted duration against the actual one, on trips
  in the model's domain (int_model_performance computes it for every batch
  being built; the gate decides which are published).
-#}
{{ config(tags=['gated']) }}

select
    batch_date,
    model_version,
    scored_trips,
    out_of_domain_trips,
    mae,
    rmse,
    bias,
    p50_predicted_min,
    p50_actual_min
from {{ ref('int_model_performance') }}
where batch_date in ({{ modelwatch.passing_batches() }})
