{#-
  One row per batch being built and model version: error of the predicted
  duration against the actual one, on trips in the model's domain (0 < actual
  duration <= performance_duration_max_minutes); model_performance publishes
  the rows of the batches that passed the contract. Computed here, ungated, so
  the scan of every trip runs beside int_value_counts and batch_checks instead
  of after the contract's tests (on a 3-million-row batch, 4-5 s off the
  build's longest path); a failed batch's row is computed and not published.
  The medians are read off the counts of each in-domain predicted and actual
  duration (percentile_cont's result, without sorting every trip).
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}') }}  {#- rebuilt by every build: no WAL #}
{%- set domain_max = var('performance_duration_max_minutes') -%}

{#- Read twice (the sums, the counts) rather than materialised: a CTE copy of every trip costs more. -#}
with scored as not materialized (
    select
        batch_date,
        model_version,
        duration_min > 0 and duration_min <= {{ domain_max }} as is_in_domain,
        duration_min,
        predicted_duration_min
    from {{ ref('int_trips_scored') }}
    where predicted_duration_min is not null
),

totals as (
    select
        batch_date,
        model_version,
        count(*) filter (where is_in_domain) as scored_trips,
        count(*) filter (where not is_in_domain or is_in_domain is null) as out_of_domain_trips,
        avg(abs(predicted_duration_min - duration_min)) filter (where is_in_domain) as mae,
        sqrt(avg((predicted_duration_min - duration_min) ^ 2) filter (where is_in_domain)) as rmse,
        avg(predicted_duration_min - duration_min) filter (where is_in_domain) as bias
    from scored
    group by batch_date, model_version
),

{#- In-domain trips per predicted and per actual duration, in one pass. -#}
value_counts as (
    select
        batch_date,
        model_version,
        case when grouping(predicted_duration_min) = 0 then 'predicted' else 'actual' end as measure,
        coalesce(predicted_duration_min, duration_min) as value,
        count(*) as row_count
    from scored
    where is_in_domain
    group by grouping sets ((batch_date, model_version, predicted_duration_min), (batch_date, model_version, duration_min))
),

medians as (
    {{ modelwatch.percentiles_from_counts('value_counts', ['batch_date', 'model_version', 'measure'], [50]) }}
)

select
    totals.batch_date,
    totals.model_version,
    totals.scored_trips,
    totals.out_of_domain_trips,
    cast(totals.mae as {{ dbt.type_float() }}) as mae,
    cast(totals.rmse as {{ dbt.type_float() }}) as rmse,
    cast(totals.bias as {{ dbt.type_float() }}) as bias,
    cast(predicted.p50 as {{ dbt.type_float() }}) as p50_predicted_min,
    cast(actual.p50 as {{ dbt.type_float() }}) as p50_actual_min
from totals
left join medians as predicted
    on predicted.batch_date = totals.batch_date
    and predicted.model_version is not distinct from totals.model_version
    and predicted.measure = 'predicted'
left join medians as actual
    on actual.batch_date = totals.batch_date
    and actual.model_version is not distinct from totals.model_version
    and actual.measure = 'actual'
