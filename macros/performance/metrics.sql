{#-
  Model performance metrics computed in the database, per group of `keys`, as
  long rows: keys..., metric, class_name (null except per-class rows), value,
  n (the rows the metric was computed on). Each metric equals scikit-learn's
  (to float rounding) on the same rows, including its edge cases, so a metric
  does not change meaning between a notebook and the monitoring tables.

  A row is evaluated when its target and prediction are not null (numbers:
  finite, as NaN and Infinity fit in float8 but are not measurements, and of
  a magnitude an aggregate can hold: is_finite); the
  probability metrics also need a finite probability. Every metric of a task
  is read off one aggregate (per group; per group and probability; per group
  and confusion cell), so `relation` is scanned once whatever the number of
  metrics: batches run to millions of rows. Only roc_auc sorts, and what it
  sorts is the distinct probabilities. A group with no evaluated row has no
  rows here.
-#}

{#-
  True when `expression` (cast to float) is a number the aggregates can hold: false for
  null, NaN, +-Infinity, and for a magnitude above finite_limit(), whose square (in a
  variance, a squared error) or sum over many rows would overflow float8, which
  PostgreSQL raises as an error rather than rounding to Infinity.
-#}
{% macro is_finite(expression) -%}
    {{ return(adapter.dispatch('is_finite', 'modelwatch')(expression)) }}
{%- endmacro %}

{#- After a subquery's FROM: its columns are computed once per row, even where the query
    reading them names them many times (PostgreSQL would otherwise inline each expression into
    every place it is read). -#}
{% macro evaluated_once() -%}
    {{ return(adapter.dispatch('evaluated_once', 'modelwatch')()) }}
{%- endmacro %}

{% macro default__evaluated_once() -%}
{%- endmacro %}

{% macro postgres__evaluated_once() -%}
    offset 0
{%- endmacro %}

{#- The largest magnitude counted as a measurement: far beyond any real column, and small
    enough that a sum of squares of billions of such values stays finite. -#}
{% macro finite_limit() -%}
    {{ return('1e100') }}
{%- endmacro %}

{#- IEEE arithmetic: every comparison with NaN is false. -#}
{% macro default__is_finite(expression) -%}
    (abs({{ expression }}) <= {{ modelwatch.finite_limit() }})
{%- endmacro %}

{#- PostgreSQL orders NaN above everything (Infinity included): outside any range. -#}
{% macro postgres__is_finite(expression) -%}
    ({{ expression }} between cast('-{{ modelwatch.finite_limit() }}' as float8) and cast('{{ modelwatch.finite_limit() }}' as float8))
{%- endmacro %}

{#- True when `expression` holds a value that is not null and not is_finite: what non_finite_share counts. -#}
{% macro is_non_finite(expression) -%}
    ({{ expression }} is not null and not {{ modelwatch.is_finite(expression) }})
{%- endmacro %}

{#- A text literal, quotes doubled: a class label is configuration, any text must be safe in it. -#}
{% macro performance_text_literal(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{#- numerator / denominator as float, `zero` when the denominator is 0 (sklearn's zero_division). -#}
{% macro performance_ratio(numerator, denominator, zero='0') -%}
    case when {{ denominator }} > 0
        then cast({{ numerator }} as {{ dbt.type_float() }}) / cast({{ denominator }} as {{ dbt.type_float() }})
        else {{ zero }} end
{%- endmacro %}

{#- One metric's rows, in the columns every macro here returns. -#}
{% macro performance_metric_rows(keys, source, metric, value, n, class_name=none, where=none) -%}
    select
        {%- for key in keys %}
        {{ key }},
        {%- endfor %}
        cast({{ modelwatch.performance_text_literal(metric) }} as {{ dbt.type_string() }}) as metric,
        cast({{ class_name if class_name is not none else 'null' }} as {{ dbt.type_string() }}) as class_name,
        cast({{ value }} as {{ dbt.type_float() }}) as value,
        cast({{ n }} as {{ dbt.type_bigint() }}) as n
    from {{ source }}
    {%- if where %}
    where {{ where }}
    {%- endif %}
{%- endmacro %}

{#- `keys` as the head of a select or group by list ("a, b, "), empty without keys. -#}
{% macro performance_key_prefix(keys) -%}
    {{ keys | join(', ') ~ ', ' if keys else '' }}
{%- endmacro %}

{#- Without keys the relation is one group, and an empty relation has no group (as with keys). -#}
{% macro performance_group_by(keys) -%}
    {{ 'group by ' ~ keys | join(', ') if keys else 'having count(*) > 0' }}
{%- endmacro %}


{#-
  Regression: mae, rmse, bias (mean of prediction - target) and r2, sklearn's
  r2_score: null below two rows (sklearn returns NaN), and with a constant
  target force_finite's 1.0 for perfect predictions, else 0.0.
-#}
{% macro regression_metrics(relation, keys, prediction, target) -%}
    {%- set float = dbt.type_float() -%}
    {%- set prefix = modelwatch.performance_key_prefix(keys) -%}
    {%- set prediction_value = 'cast(' ~ prediction ~ ' as ' ~ float ~ ')' -%}
    {%- set target_value = 'cast(' ~ target ~ ' as ' ~ float ~ ')' -%}
with evaluated as (
    select
        {{ prefix }}
        {{ prediction_value }} - {{ target_value }} as error,
        {{ target_value }} as target
    from {{ relation }}
    where {{ modelwatch.is_finite(prediction_value) }} and {{ modelwatch.is_finite(target_value) }}
),

per_group as (
    {#- sum / count rather than avg: PostgreSQL's float avg also sums squares, which overflow
        for errors above 1e154 (and cost time). #}
    select
        {{ prefix }}
        count(*) as n,
        sum(abs(error)) / count(*) as mae,
        sum(error * error) / count(*) as mse,
        sum(error) / count(*) as bias,
        sum(error * error) as residual_sum_of_squares,
        var_pop(target) * count(*) as total_sum_of_squares,
        {#- sklearn's constant target is an exact zero of its total sum of squares: min = max
            says so exactly where a computed variance may be a rounding error off zero. #}
        case when min(target) = max(target) then 1 else 0 end as is_target_constant
    from evaluated
    {{ modelwatch.performance_group_by(keys) }}
)

{{ modelwatch.performance_metric_rows(keys, 'per_group', 'mae', 'mae', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'rmse', 'sqrt(mse)', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'bias', 'bias', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'r2',
    'case
            when n < 2 then null
            when residual_sum_of_squares = 0 then 1.0
            when is_target_constant = 1 then 0.0
            else 1 - residual_sum_of_squares / total_sum_of_squares
        end', 'n') }}
{%- endmacro %}


{#-
  Binary classification, `positive_class` (a text literal) against the rest:
  accuracy, precision, recall, f1 (0 where sklearn's zero_division applies),
  and from `probability` (of the positive class) roc_auc and log_loss.

  roc_auc is the Mann-Whitney statistic with tied probabilities counting one
  half (sklearn's trapezoids over tied thresholds give the same), from the
  positives and negatives at each distinct probability and the negatives
  below it: a sort of distinct probabilities, not of rows. Null for a group
  with one class (sklearn raises). log_loss clips the probabilities to
  [eps, 1 - eps], eps = float64 machine epsilon (sklearn >= 1.5); sklearn
  raises for a group with one class unless given `labels`, and for
  probabilities outside [0, 1], which are clipped here.
-#}
{% macro binary_metrics(relation, keys, prediction, target, probability, positive_class) -%}
    {%- set float = dbt.type_float() -%}
    {%- set string = dbt.type_string() -%}
    {%- set prefix = modelwatch.performance_key_prefix(keys) -%}
    {%- set positive = modelwatch.performance_text_literal(positive_class) -%}
    {%- set probability_value = 'cast(' ~ probability ~ ' as ' ~ float ~ ')' -%}
    {#- 2^-52, numpy.finfo(float64).eps: the bound sklearn clips probabilities to -#}
    {%- set eps = 'cast(2.220446049250313e-16 as ' ~ float ~ ')' -%}
    {%- set one = 'cast(1 as ' ~ float ~ ')' -%}
    {%- set negatives = '(row_count - positives)' -%}
with evaluated as (
    select
        {{ prefix }}
        case when cast({{ target }} as {{ string }}) = {{ positive }} then 1 else 0 end as actual,
        case when cast({{ prediction }} as {{ string }}) = {{ positive }} then 1 else 0 end as predicted,
        case when {{ modelwatch.is_finite(probability_value) }} then {{ probability_value }} end as probability
    from {{ relation }}
    where {{ target }} is not null and {{ prediction }} is not null
),

{#- One row per group and probability (null: not finite): every metric sums these counts. #}
by_probability as (
    select
        {{ prefix }}
        probability,
        count(*) as row_count,
        sum(actual) as positives,
        sum(predicted) as predicted_positives,
        sum(actual * predicted) as true_positives,
        sum(case when actual = predicted then 1 else 0 end) as correct
    from evaluated
    group by {{ prefix }} probability
),

ranked as (
    select
        by_probability.*,
        {#- negatives scored strictly below this probability (the null row's is unused) #}
        sum(case when probability is not null then {{ negatives }} else 0 end) over (
            {{ 'partition by ' ~ keys | join(', ') if keys else '' }}
            order by probability
            rows between unbounded preceding and current row
        ) - {{ negatives }} as negatives_below,
        case when probability < {{ eps }} then {{ eps }} when probability > {{ one }} - {{ eps }} then {{ one }} - {{ eps }} else probability end
            as clipped_probability,
        {#- 1 - p before clipping, as sklearn does (its column of the negative class) #}
        case when {{ one }} - probability < {{ eps }} then {{ eps }}
            when {{ one }} - probability > {{ one }} - {{ eps }} then {{ one }} - {{ eps }}
            else {{ one }} - probability end as clipped_complement
    from by_probability
),

per_group as (
    select
        {{ prefix }}
        sum(row_count) as n,
        sum(correct) as correct,
        sum(positives) as positives,
        sum(predicted_positives) as predicted_positives,
        sum(true_positives) as true_positives,
        sum(case when probability is not null then row_count else 0 end) as scored,
        sum(case when probability is not null then positives else 0 end) as scored_positives,
        {#- twice the Mann-Whitney U: integers, exact whatever the batch size #}
        sum(case when probability is not null
            then positives * (2 * negatives_below + {{ negatives }}) else 0 end) as twice_u,
        sum(case when probability is not null
            then -(positives * ln(clipped_probability) + {{ negatives }} * ln(clipped_complement)) end) as log_loss_sum
    from ranked
    {{ modelwatch.performance_group_by(keys) }}
)

{{ modelwatch.performance_metric_rows(keys, 'per_group', 'accuracy', modelwatch.performance_ratio('correct', 'n'), 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'precision', modelwatch.performance_ratio('true_positives', 'predicted_positives'), 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'recall', modelwatch.performance_ratio('true_positives', 'positives'), 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'f1', modelwatch.performance_ratio('2 * true_positives', 'positives + predicted_positives'), 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'roc_auc',
    'case when scored_positives > 0 and scored_positives < scored
            then cast(twice_u as ' ~ float ~ ') / (2 * cast(scored_positives as ' ~ float ~ ') * cast(scored - scored_positives as ' ~ float ~ '))
        end', 'scored') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'log_loss', modelwatch.performance_ratio('log_loss_sum', 'scored', 'null'), 'scored') }}
{%- endmacro %}


{#-
  Multiclass classification: accuracy and sklearn's macro precision, recall
  and f1 (the unweighted mean over the labels in the group's target or
  prediction, as sklearn takes them without `labels`; zero_division 0), and
  a recall row per class in the group's target (class_name; n: its rows).
  All from the group's confusion cells (target, prediction): one small
  aggregate. None of these metrics reads `probabilities` (class ->
  probability column) or `classes`, so a row's probabilities do not decide
  whether it is evaluated; they are only checked against each other here.
-#}
{% macro multiclass_metrics(relation, keys, prediction, target, probabilities, classes) -%}
    {%- if probabilities is not none and classes is not none -%}
        {%- for class_name in probabilities -%}
            {%- if class_name not in classes -%}
                {{ exceptions.raise_compiler_error("multiclass_metrics: probabilities has class '" ~ class_name ~ "', which is not in classes " ~ classes) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- set string = dbt.type_string() -%}
    {%- set prefix = modelwatch.performance_key_prefix(keys) -%}
with labelled as (
    select
        {{ prefix }}
        cast({{ target }} as {{ string }}) as actual,
        cast({{ prediction }} as {{ string }}) as predicted
    from {{ relation }}
    where {{ target }} is not null and {{ prediction }} is not null
),

cells as (
    select {{ prefix }} actual, predicted, count(*) as row_count
    from labelled
    group by {{ prefix }} actual, predicted
),

{#- Each label's support (target), predictions and hits: its row and its column of the cells. #}
per_label as (
    select
        {{ prefix }}
        label,
        sum(support) as support,
        sum(predicted_count) as predicted_count,
        sum(true_positives) as true_positives
    from (
        select {{ prefix }} actual as label, row_count as support, 0 as predicted_count,
            case when actual = predicted then row_count else 0 end as true_positives
        from cells
        union all
        select {{ prefix }} predicted as label, 0 as support, row_count as predicted_count, 0 as true_positives
        from cells
    ) as label_counts
    group by {{ prefix }} label
),

scores as (
    select
        per_label.*,
        {{ modelwatch.performance_ratio('true_positives', 'predicted_count') }} as precision_score,
        {{ modelwatch.performance_ratio('true_positives', 'support') }} as recall_score,
        {{ modelwatch.performance_ratio('2 * true_positives', 'support + predicted_count') }} as f1_score
    from per_label
),

per_group as (
    select
        {{ prefix }}
        sum(support) as n,
        sum(true_positives) as correct,
        avg(precision_score) as macro_precision,
        avg(recall_score) as macro_recall,
        avg(f1_score) as macro_f1
    from scores
    {{ modelwatch.performance_group_by(keys) }}
)

{{ modelwatch.performance_metric_rows(keys, 'per_group', 'accuracy', modelwatch.performance_ratio('correct', 'n'), 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'macro_precision', 'macro_precision', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'macro_recall', 'macro_recall', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'per_group', 'macro_f1', 'macro_f1', 'n') }}
union all
{{ modelwatch.performance_metric_rows(keys, 'scores', 'recall', 'recall_score', 'support', class_name='label', where='support > 0') }}
{%- endmacro %}


{#- The metrics of a model's task: regression, binary_classification or multiclass_classification. -#}
{% macro performance_metrics(task, relation, keys, prediction, target, probability=none, probabilities=none, classes=none, positive_class='1') -%}
    {%- if task == 'regression' -%}
        {{ return(modelwatch.regression_metrics(relation, keys, prediction, target)) }}
    {%- elif task == 'binary_classification' -%}
        {%- if probability is none -%}
            {{ exceptions.raise_compiler_error("performance_metrics: binary_classification needs `probability` (the positive class's column)") }}
        {%- endif -%}
        {{ return(modelwatch.binary_metrics(relation, keys, prediction, target, probability, positive_class)) }}
    {%- elif task == 'multiclass_classification' -%}
        {{ return(modelwatch.multiclass_metrics(relation, keys, prediction, target, probabilities, classes)) }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("performance_metrics: unknown task '" ~ task ~ "' (regression, binary_classification or multiclass_classification)") }}
    {%- endif -%}
{%- endmacro %}
