{#-
  Estimated performance per batch being built and metric, labelled or not
  (modelwatch.drift.estimation fits what it needs once per reference set).

  Classifiers, CBPE: each row's probability of each class (a binary model: of
  its positive class) through the class's calibration map (raw.calibration_maps,
  linear between breakpoints as scikit-learn's isotonic predict, clipped at the
  ends; PostgreSQL's width_bucket finds the breakpoint), then the expected
  confusion matrix: a calibrated probability c counts c towards the row's class
  and 1 - c against it. roc_auc is the Mann-Whitney statistic over rows ranked
  by the model's own probability, each a positive of weight c and a negative of
  weight 1 - c (ties one half: NannyML's estimate_roc_auc). A multiclass model's
  calibrated probabilities are rescaled to sum to one per row; its metrics are
  the macro averages of the classes' one-vs-rest ones, accuracy the expected
  share of rows whose predicted class is right.

  Regression, DLE: the drift step's estimates (raw.estimated_losses).
-#}
-- depends_on: {{ ref('int_batch_rows') }}
-- depends_on: {{ source('raw', 'estimated_losses') }}
{{ config(materialized='table', unlogged=true) }}
{%- set m = modelwatch.monitor() -%}
{%- set float = dbt.type_float() -%}
{%- set string = dbt.type_string() -%}
{%- if m.task == 'binary_classification' -%}
    {%- set classes = {m.positive_class: m.probability} -%}
{%- elif m.task == 'multiclass_classification' -%}
    {%- set classes = m.probability -%}
{%- endif %}

{%- if m.task == 'regression' %}
select
    losses.monitor,
    losses.batch_date,
    cast(losses.metric as {{ string }}) as metric,
    cast(losses.estimated_value as {{ float }}) as estimated_value,
    cast(losses.n as bigint) as n,
    cast(losses.reference_version as {{ string }}) as reference_version
from {{ source('raw', 'estimated_losses') }} as losses
inner join {{ ref('stg_batches') }} as batches
    on batches.monitor = losses.monitor and batches.batch_date = losses.batch_date
    and batches.reference_version = losses.reference_version
where losses.monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('losses.batch_date') }}
{%- else %}
with batches as (
    select batch_date, reference_version
    from {{ ref('stg_batches') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

{#- one row per batch row: its prediction and each class's probability, all finite #}
scored as (
    select
        rows.batch_date,
        cast(rows.{{ m.prediction }} as {{ string }}) as prediction
        {%- for class_name, column in classes.items() %},
        cast(rows.{{ column }} as {{ float }}) as probability_{{ loop.index }}
        {%- endfor %}
    from {{ ref('int_batch_rows') }} as rows
    where rows.{{ m.prediction }} is not null
    {%- for class_name, column in classes.items() %}
      and {{ modelwatch.is_finite('cast(rows.' ~ column ~ ' as ' ~ float ~ ')') }}
    {%- endfor %}
),

{#- each reference version's map of each class as two arrays, its breakpoints in order #}
maps as (
    select
        reference_version,
        class_name,
        array_agg(x order by point) as xs,
        array_agg(y order by point) as ys,
        count(*) as points
    from {{ api.Relation.create(database=target.database, schema='raw', identifier='calibration_maps') }}
    where monitor = '{{ m.name }}' and reference_version in (select reference_version from batches)
    group by reference_version, class_name
),

{#- each class's probability through its map: width_bucket finds (by bisection) how many
    breakpoints lie at or below it, then linear between that breakpoint and the next, clipped at
    the ends (scikit-learn's isotonic predict) #}
located as (
    select
        scored.*
        {%- for class_name, column in classes.items() %},
        map_{{ loop.index }}.xs as xs_{{ loop.index }},
        map_{{ loop.index }}.ys as ys_{{ loop.index }},
        map_{{ loop.index }}.points as points_{{ loop.index }},
        width_bucket(scored.probability_{{ loop.index }}, map_{{ loop.index }}.xs) as bucket_{{ loop.index }}
        {%- endfor %}
    from scored
    inner join batches on batches.batch_date = scored.batch_date
    {%- for class_name, column in classes.items() %}
    inner join maps as map_{{ loop.index }}
        on map_{{ loop.index }}.reference_version = batches.reference_version
        and map_{{ loop.index }}.class_name = {{ modelwatch.performance_text_literal(class_name) }}
    {%- endfor %}
),

mapped as (
    select
        located.*
        {%- for class_name, column in classes.items() %}
        {%- set i = loop.index %},
        case
            when bucket_{{ i }} = 0 then ys_{{ i }}[1]
            when bucket_{{ i }} >= points_{{ i }} then ys_{{ i }}[points_{{ i }}]
            else ys_{{ i }}[bucket_{{ i }}] + (probability_{{ i }} - xs_{{ i }}[bucket_{{ i }}])
                * (ys_{{ i }}[bucket_{{ i }} + 1] - ys_{{ i }}[bucket_{{ i }}])
                / (xs_{{ i }}[bucket_{{ i }} + 1] - xs_{{ i }}[bucket_{{ i }}])
        end as calibrated_{{ i }}
        {%- endfor %}
    from located
),

{#- one row per batch row and class; a multiclass model's calibrated probabilities rescaled to
    sum to one per row (uniform where all are zero), as NannyML does #}
calibrated as (
    {%- set total = [] %}
    {%- for class_name, column in classes.items() %}{% do total.append('calibrated_' ~ loop.index) %}{% endfor %}
    {%- for class_name, column in classes.items() %}
    select
        batch_date,
        cast({{ modelwatch.performance_text_literal(class_name) }} as {{ string }}) as class_name,
        case when prediction = {{ modelwatch.performance_text_literal(class_name) }} then 1 else 0 end as predicted,
        probability_{{ loop.index }} as score,
        {%- if m.task == 'multiclass_classification' %}
        case when {{ total | join(' + ') }} = 0 then cast(1 as {{ float }}) / {{ classes | length }}
            else calibrated_{{ loop.index }} / ({{ total | join(' + ') }}) end as probability
        {%- else %}
        calibrated_{{ loop.index }} as probability
        {%- endif %}
    from mapped
    where calibrated_{{ loop.index }} is not null
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

confusion as (
    select
        batch_date, class_name,
        count(*) as n,
        sum(predicted * probability) as true_positives,
        sum(predicted * (1 - probability)) as false_positives,
        sum((1 - predicted) * probability) as false_negatives,
        sum((1 - predicted) * (1 - probability)) as true_negatives
    from calibrated
    group by batch_date, class_name
),

{#- ranked by the model's own score, weighted by the calibrated probability (NannyML's estimate_roc_auc) #}
by_probability as (
    select batch_date, class_name, score, sum(probability) as positives, sum(1 - probability) as negatives
    from calibrated
    group by batch_date, class_name, score
),

ranked as (
    select
        by_probability.*,
        sum(negatives) over (partition by batch_date, class_name order by score
                             rows between unbounded preceding and current row) - negatives as negatives_below
    from by_probability
),

auc as (
    select
        batch_date, class_name,
        case when sum(positives) > 0 and sum(negatives) > 0
            then sum(positives * (2 * negatives_below + negatives)) / (2 * sum(positives) * sum(negatives)) end as roc_auc
    from ranked
    group by batch_date, class_name
),

per_class as (
    select
        confusion.batch_date,
        confusion.class_name,
        confusion.n,
        auc.roc_auc,
        {{ modelwatch.performance_ratio('true_positives + true_negatives', 'n') }} as accuracy,
        {{ modelwatch.performance_ratio('true_positives', 'true_positives + false_positives') }} as precision_value,
        {{ modelwatch.performance_ratio('true_positives', 'true_positives + false_negatives') }} as recall_value,
        {{ modelwatch.performance_ratio('2 * true_positives', '2 * true_positives + false_positives + false_negatives') }} as f1_value,
        true_positives
    from confusion
    inner join auc on auc.batch_date = confusion.batch_date and auc.class_name = confusion.class_name
),

per_batch as (
    select
        per_class.batch_date,
        max(n) as n,
        avg(roc_auc) as roc_auc,
        {%- if m.task == 'binary_classification' %}
        avg(accuracy) as accuracy,
        {%- else %}
        {#- the expected right predictions: each row's calibrated probability of its predicted class #}
        sum(true_positives) / max(n) as accuracy,
        {%- endif %}
        avg(precision_value) as precision_value,
        avg(recall_value) as recall_value,
        avg(f1_value) as f1_value
    from per_class
    group by per_class.batch_date
),

metrics as (
    select batch_date, 'roc_auc' as metric, roc_auc as estimated_value, n from per_batch
    union all select batch_date, 'accuracy', accuracy, n from per_batch
    union all select batch_date, 'precision', precision_value, n from per_batch
    union all select batch_date, 'recall', recall_value, n from per_batch
    union all select batch_date, 'f1', f1_value, n from per_batch
)

select
    cast('{{ m.name }}' as {{ string }}) as monitor,
    metrics.batch_date,
    cast(metrics.metric as {{ string }}) as metric,
    cast(metrics.estimated_value as {{ float }}) as estimated_value,
    cast(metrics.n as bigint) as n,
    cast(batches.reference_version as {{ string }}) as reference_version
from metrics
inner join batches on batches.batch_date = metrics.batch_date
{%- endif %}
