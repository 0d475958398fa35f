{#-
  One row per batch being built and metric (per class for a classifier's
  per-class recall): the model's performance on the batch's labelled rows, the
  metrics of the monitor's task (macros/performance/metrics.sql, each equal to
  scikit-learn's), on the rows the monitor's performance_where admits (such as
  the rows in the model's domain). model_performance publishes the rows of
  the batches that passed the contract. Computed here, ungated, so its scan of
  every row runs beside int_value_counts instead of after the contract's tests.
-#}
{{ config(materialized='table', unlogged=true, pre_hook='{{ modelwatch.build_work_mem() }}') }}  {#- rebuilt by every build: no WAL #}
{%- set m = modelwatch.monitor() -%}

{#- Read twice (scored, batch_rows): not materialized, or PostgreSQL would keep every column of
    every row in a tuplestore first. #}
with batch_rows_read as not materialized (
    select *
    from {{ ref('int_batch_rows') }}
),

scored as not materialized (
    select *
    from batch_rows_read
    {%- if m.get('performance_where') %}
    where ({{ m.performance_where }})
    {%- endif %}
),

metrics as (
    {{ modelwatch.performance_metrics(
        m.task, 'scored', ['monitor', 'batch_date'], m.prediction, m.target,
        probability=m.get('probability') if m.task == 'binary_classification' else none,
        probabilities=m.get('probability') if m.task == 'multiclass_classification' else none,
        classes=(m.get('probability') or {}).keys() | list if m.task == 'multiclass_classification' else none,
        positive_class=m.positive_class) }}
),

batch_rows as (
    select batch_date, count(*) as row_count, count({{ m.target }}) as labelled_rows
    from batch_rows_read
    group by batch_date
)

select
    metrics.monitor,
    metrics.batch_date,
    cast(metrics.metric as {{ dbt.type_string() }}) as metric,
    cast(coalesce(metrics.class_name, '') as {{ dbt.type_string() }}) as class_name,
    cast(metrics.value as {{ dbt.type_float() }}) as value,
    cast(metrics.n as bigint) as n,
    cast(batch_rows.row_count as bigint) as batch_rows,
    cast(batch_rows.labelled_rows as bigint) as labelled_rows
from metrics
inner join batch_rows on batch_rows.batch_date = metrics.batch_date
