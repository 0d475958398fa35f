{#-
  One row per batch that passed the contract (gated): is the batch as a whole
  drifting? The headline figures are Evidently's (the drift step's
  DriftedColumnsCount over the monitored features and the prediction, and its
  ValueDrift on the prediction); the sql_psi figures of feature_drift are
  alongside for comparison. A batch the drift step has not scored has nulls.
-#}
{{ config(tags=['gated']) }}
{%- set m = modelwatch.monitor() -%}
{%- set prediction = m.prediction -%}

with batches as (
    select batch_date
    from {{ ref('stg_batches') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
      and batch_date in ({{ modelwatch.passing_batches() }})
),

datasets as (
    select * from {{ ref('stg_drift_datasets') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

feature_drift as (
    select * from {{ ref('feature_drift') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

prediction_evidently as (
    select batch_date, method, score, drifted
    from feature_drift
    where source = 'evidently' and column_name = '{{ prediction }}'
),

psi_summary as (
    select
        batch_date,
        count(*) filter (where drifted) as psi_columns_drifted,
        max(score) filter (where column_name = '{{ prediction }}') as prediction_psi
    from feature_drift
    where source = 'sql_psi'
    group by batch_date
)

select
    cast('{{ m.name }}' as text) as monitor,
    batches.batch_date,
    datasets.columns_monitored,
    datasets.columns_computed,
    datasets.columns_drifted,
    datasets.share_drifted,
    datasets.is_dataset_drift as dataset_drift,
    datasets.dataset_drift_share,
    prediction_evidently.score as prediction_drift_score,
    prediction_evidently.method as prediction_drift_method,
    prediction_evidently.drifted as prediction_drifted,
    cast(psi_summary.psi_columns_drifted as integer) as psi_columns_drifted,
    psi_summary.prediction_psi,
    datasets.current_rows,
    datasets.current_rows_used as evidently_rows
from batches
left join datasets on datasets.batch_date = batches.batch_date
left join prediction_evidently on prediction_evidently.batch_date = batches.batch_date
left join psi_summary on psi_summary.batch_date = batches.batch_date
