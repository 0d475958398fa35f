{#-
  One row per batch and metric (and class, for per-class metrics), for batches
  that passed the contract (gated): the metrics of the monitor's task on the
  batch's labelled rows (int_model_performance computes them for every batch
  being built; the gate decides which are published), with the model and
  reference the batch was scored and compared with.
-#}
{{ config(tags=['gated']) }}

with batches as (
    select monitor, batch_date, model_version
    from {{ ref('stg_batches') }}
    where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }}
)

select
    performance.monitor,
    performance.batch_date,
    performance.metric,
    performance.class_name,
    performance.value,
    performance.n,
    performance.batch_rows,
    performance.labelled_rows,
    cast(performance.labelled_rows as {{ dbt.type_float() }}) / nullif(performance.batch_rows, 0) as label_coverage,
    batches.model_version
from {{ ref('int_model_performance') }} as performance
inner join batches on batches.batch_date = performance.batch_date
where performance.batch_date in ({{ modelwatch.passing_batches() }})
