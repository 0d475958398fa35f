{#-
  One row per batch and profiled column of the monitor (features, prediction,
  target, probabilities): completeness and distribution,
  derived from the batch's frequency table (int_value_counts), not from its
  rows (a numeric column with about as many values as rows: from
  int_numeric_profile, which sorts it once): the quantiles come from cumulative counts (macros/value_counts.sql,
  equal to percentile_cont's), the mean and standard deviation from
  value x count sums, so no column of a 3-million-row batch is sorted.
  A non-finite number (NaN, +-Infinity, or beyond the magnitude aggregates can
  hold: modelwatch.is_finite) is counted in non_finite_count and enters no other
  figure: the distribution is that of the finite values.
-#}
{%- set m = modelwatch.monitor() -%}
{%- set numeric_columns = modelwatch.numeric_columns(m) -%}
{%- set categorical_columns = modelwatch.categorical_columns(m) -%}
{%- set quantiles = [5, 25, 50, 75, 95] -%}
{%- set float = dbt.type_float() -%}

with counts as (
    select * from {{ ref('int_value_counts') }}
),

numeric_counts as (
    select batch_date, column_name, value, row_count
    from counts
    where column_name in ('{{ numeric_columns | join("', '") }}')
),

numeric_profile as (
    select
        batch_date,
        column_name,
        cast(sum(row_count) as bigint) as row_count,
        cast(coalesce(sum(row_count) filter (where value is null), 0) as bigint) as missing_count,
        cast(coalesce(sum(row_count) filter (where {{ modelwatch.is_non_finite('value') }}), 0) as bigint) as non_finite_count,
        cast(sum(row_count) filter (where {{ modelwatch.is_finite('value') }}) as bigint) as present_count,
        min(value) filter (where {{ modelwatch.is_finite('value') }}) as min_value,
        max(value) filter (where {{ modelwatch.is_finite('value') }}) as max_value,
        sum(value * row_count) filter (where {{ modelwatch.is_finite('value') }})
            / cast(sum(row_count) filter (where {{ modelwatch.is_finite('value') }}) as {{ float }}) as mean_value
    from numeric_counts
    group by batch_date, column_name
),

{#- Sample standard deviation in two passes (around the mean), as stddev_samp: null below 2 values. -#}
numeric_spread as (
    select
        numeric_counts.batch_date,
        numeric_counts.column_name,
        sqrt(
            sum(numeric_counts.row_count * (numeric_counts.value - numeric_profile.mean_value) ^ 2)
            / nullif(max(numeric_profile.present_count) - 1, 0)
        ) as stddev_value
    from numeric_counts
    inner join numeric_profile
        on numeric_profile.batch_date = numeric_counts.batch_date
        and numeric_profile.column_name = numeric_counts.column_name
    where {{ modelwatch.is_finite('numeric_counts.value') }}
    group by numeric_counts.batch_date, numeric_counts.column_name
),

finite_counts as (
    select * from numeric_counts where {{ modelwatch.is_finite('value') }}
),

numeric_quantiles as (
    {{ modelwatch.percentiles_from_counts('finite_counts', ['batch_date', 'column_name'], quantiles) }}
){%- if categorical_columns %},

categorical_profile as (
    select
        counts.batch_date,
        counts.column_name,
        cast(sum(counts.row_count) as bigint) as row_count,
        cast(coalesce(sum(counts.row_count) filter (where counts.category is null), 0) as bigint) as missing_count,
        cast(count(counts.category) as bigint) as distinct_count,
        cast(max(counts.row_count) filter (where counts.category is not null) as {{ float }})
            / nullif(sum(counts.row_count) filter (where counts.category is not null), 0) as top_value_share
    from counts
    where counts.column_name in ('{{ categorical_columns | join("', '") }}')
    group by counts.batch_date, counts.column_name
){%- endif %}

select
    cast('{{ m.name }}' as text) as monitor,
    numeric_profile.batch_date,
    cast(numeric_profile.column_name as text) as column_name,
    cast('numeric' as text) as column_kind,
    numeric_profile.row_count,
    numeric_profile.missing_count,
    cast(numeric_profile.missing_count as {{ float }}) / nullif(numeric_profile.row_count, 0) as missing_share,
    cast(numeric_profile.min_value as {{ float }}) as min_value,
    {% for q in quantiles -%}
    cast(numeric_quantiles.p{{ '%02d' % q }} as {{ float }}) as p{{ '%02d' % q }},
    {% endfor -%}
    cast(numeric_profile.max_value as {{ float }}) as max_value,
    cast(numeric_profile.mean_value as {{ float }}) as mean_value,
    cast(numeric_spread.stddev_value as {{ float }}) as stddev_value,
    cast(null as bigint) as distinct_count,
    cast(null as {{ float }}) as top_value_share,
    numeric_profile.non_finite_count,
    cast(numeric_profile.non_finite_count as {{ float }}) / nullif(numeric_profile.row_count, 0) as non_finite_share
from numeric_profile
left join numeric_quantiles
    on numeric_quantiles.batch_date = numeric_profile.batch_date
    and numeric_quantiles.column_name = numeric_profile.column_name
left join numeric_spread
    on numeric_spread.batch_date = numeric_profile.batch_date
    and numeric_spread.column_name = numeric_profile.column_name

{#- The numeric columns profiled from their rows, not counted by value. #}
union all
select
    cast('{{ m.name }}' as text) as monitor,
    batch_date,
    cast(column_name as text) as column_name,
    cast('numeric' as text) as column_kind,
    row_count,
    missing_count,
    cast(missing_count as {{ float }}) / nullif(row_count, 0) as missing_share,
    cast(min_value as {{ float }}) as min_value,
    {% for q in quantiles -%}
    cast(p{{ '%02d' % q }} as {{ float }}) as p{{ '%02d' % q }},
    {% endfor -%}
    cast(max_value as {{ float }}) as max_value,
    cast(mean_value as {{ float }}) as mean_value,
    cast(stddev_value as {{ float }}) as stddev_value,
    cast(null as bigint) as distinct_count,
    cast(null as {{ float }}) as top_value_share,
    non_finite_count,
    cast(non_finite_count as {{ float }}) / nullif(row_count, 0) as non_finite_share
from {{ ref('int_numeric_profile') }}

{% if categorical_columns %}
union all
select
    cast('{{ m.name }}' as text) as monitor,
    batch_date,
    cast(column_name as text) as column_name,
    cast('categorical' as text) as column_kind,
    row_count,
    missing_count,
    cast(missing_count as {{ float }}) / nullif(row_count, 0) as missing_share,
    {% for name in ['min_value', 'p05', 'p25', 'p50', 'p75', 'p95', 'max_value', 'mean_value', 'stddev_value'] -%}
    cast(null as {{ float }}) as {{ name }},
    {% endfor -%}
    distinct_count,
    top_value_share,
    cast(null as bigint) as non_finite_count,
    cast(null as {{ float }}) as non_finite_share
from categorical_profile
{% endif %}
