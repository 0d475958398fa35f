{#-
  One row per batch and estimated metric, for batches that passed the contract,
  labelled or not: the estimate (int_estimated_performance: CBPE for a
  classifier, DLE for a regression), the thresholds fitted on the batch's
  reference set (raw.estimation_thresholds: mean +- 3 std of the reference's
  own batches, clipped to the metric's range) and whether the estimate left
  them; once labels land, the realised value of the same metric beside it
  (model_performance's; a multiclass model's macro averages).
-#}
{{ config(tags=['gated']) }}
{%- set m = modelwatch.monitor() -%}
{%- set realised_names = {'precision': 'macro_precision', 'recall': 'macro_recall', 'f1': 'macro_f1'}
    if m.task == 'multiclass_classification' else {} %}

with thresholds as (
    select reference_version, metric, lower_threshold, upper_threshold
    from {{ api.Relation.create(database=target.database, schema='raw', identifier='estimation_thresholds') }}
    where monitor = '{{ m.name }}'
),

realised as (
    select batch_date, metric, value, n
    from {{ ref('int_model_performance') }}
    where class_name = ''
)

select
    estimated.monitor,
    estimated.batch_date,
    estimated.metric,
    estimated.estimated_value,
    thresholds.lower_threshold as threshold_lower,
    thresholds.upper_threshold as threshold_upper,
    coalesce(estimated.estimated_value < thresholds.lower_threshold
             or estimated.estimated_value > thresholds.upper_threshold, false) as alert,
    realised.value as realised_value,
    cast(coalesce(realised.n, 0) as bigint) as labelled_rows,
    estimated.n,
    estimated.reference_version
from {{ ref('int_estimated_performance') }} as estimated
left join thresholds
    on thresholds.reference_version = estimated.reference_version and thresholds.metric = estimated.metric
left join realised
    on realised.batch_date = estimated.batch_date
    and realised.metric = {% if realised_names %}case estimated.metric
        {%- for ours, theirs in realised_names.items() %} when '{{ ours }}' then '{{ theirs }}'{% endfor %}
        else estimated.metric end{% else %}estimated.metric{% endif %}
where estimated.batch_date in ({{ modelwatch.passing_batches() }})
