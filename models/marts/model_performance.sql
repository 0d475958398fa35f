{#-
  One row per batch and model version: error of the predicted duration against
  the actual one, for batches that passed the contract (gated), on trips in the
  model's domain (0 < actual duration <= performance_duration_max_minutes).
-#}
{{ config(tags=['gated']) }}
{%- set domain_max = var('performance_duration_max_minutes') -%}

with scored as (
    select * from {{ ref('int_trips_scored') }}
    where batch_date in ({{ modelwatch.passing_batches() }})
      and predicted_duration_min is not null
),

in_domain as (
    select
        *,
        duration_min > 0 and duration_min <= {{ domain_max }} as is_in_domain,
        predicted_duration_min - duration_min as error_min
    from scored
)

select
    batch_date,
    model_version,
    count(*) filter (where is_in_domain) as scored_trips,
    count(*) filter (where not is_in_domain or is_in_domain is null) as out_of_domain_trips,
    cast(avg(abs(error_min)) filter (where is_in_domain) as {{ dbt.type_float() }}) as mae,
    cast(sqrt(avg(error_min * error_min) filter (where is_in_domain)) as {{ dbt.type_float() }}) as rmse,
    cast(avg(error_min) filter (where is_in_domain) as {{ dbt.type_float() }}) as bias,
    cast(percentile_cont(0.5) within group (order by predicted_duration_min) filter (where is_in_domain) as {{ dbt.type_float() }}) as p50_predicted_min,
    cast(percentile_cont(0.5) within group (order by duration_min) filter (where is_in_domain) as {{ dbt.type_float() }}) as p50_actual_min
from in_domain
group by batch_date, model_version
