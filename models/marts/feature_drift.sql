{#-
  One row per batch, monitored column and source, for batches that passed the
  contract (gated):
  - source 'evidently': Evidently's ValueDrift from the drift step
    (raw.drift_scores), with the method and threshold Evidently chose for the
    column; a column it could not score (empty or constant) has a null score
    and verdict and says why in `reason`;
  - source 'sql_psi': the population stability index computed here, against
    the reference bins of the batch's reference set (int_reference_bins):
    PSI = sum over bins of (current - reference) * ln(current / reference),
    shares over the rows the column holds a null or a finite number in (a
    non-finite one is counted by the contract's non_finite_share, never
    binned), an empty bin's share counted
    as vars.drift.psi_epsilon; drifted when PSI >= vars.drift.psi_threshold.
-#}
{{ config(tags=['gated'], pre_hook='{{ modelwatch.without_nested_loops() }}') }}
{%- set m = modelwatch.monitor() -%}
{%- set drift = modelwatch.drift_options(m) -%}

with batches as (
    select batch_date, reference_version
    from {{ ref('stg_batches') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
      and batch_date in ({{ modelwatch.passing_batches() }})
),

evidently as (
    select
        scores.batch_date,
        scores.column_name,
        cast('evidently' as {{ dbt.type_string() }}) as source,
        scores.drift_method as method,
        scores.drift_score as score,
        scores.drift_threshold as threshold,
        scores.is_drifted as drifted,
        scores.not_computed_reason as reason
    from {{ ref('stg_drift_scores') }} as scores
    inner join batches on batches.batch_date = scores.batch_date
    where scores.monitor = '{{ m.name }}'
),

{#- The batches' frequency table (int_value_counts), with the reference version each batch is binned by. -#}
current_counts as (
    select batches.reference_version, counts.*
    from {{ ref('int_value_counts') }} as counts
    inner join batches on batches.batch_date = counts.batch_date
    where counts.column_name in ('{{ (modelwatch.drift_numeric_columns() + modelwatch.drift_categorical_columns()) | join("', '") }}')
      and not {{ modelwatch.is_non_finite('counts.value') }}
),

bins as (
    select reference_bins.*
    from {{ ref('int_reference_bins') }} as reference_bins
    where reference_bins.monitor = '{{ m.name }}'
      and reference_bins.reference_version in (select reference_version from batches)
),

{#- Materialized: the join below is planned on guesses (a CTE has no statistics) and may be a
    nested loop, which would otherwise recompute the counts once per bin (PostgreSQL 18 did:
    8 s on a 3-million-row batch instead of 0.5 s). #}
bin_counts as materialized (
    {{ modelwatch.psi_bin_counts('current_counts', 'bins', ['batch_date', 'reference_version']) }}
),

{#- The numeric columns profiled from their rows (int_numeric_profile): their rows per bin of
    the batch's reference set, by bin_index. #}
profiled_from_rows as (
    select profile.batch_date, profile.column_name, profile.row_count - profile.non_finite_count as row_count,
           profile.bin_counts
    from {{ ref('int_numeric_profile') }} as profile
    inner join batches on batches.batch_date = profile.batch_date
    where profile.column_name in ('{{ modelwatch.drift_numeric_columns() | join("', '") }}')
),

all_bin_counts as (
    select batch_date, column_name, bin_index, row_count from bin_counts
    union all
    select profiled_from_rows.batch_date, profiled_from_rows.column_name,
           cast(per_bin.bin_index as integer), per_bin.row_count
    from profiled_from_rows
    cross join lateral unnest(profiled_from_rows.bin_counts) with ordinality as per_bin (row_count, bin_index)
),

{#- Per column: the batch's rows less those whose value is non-finite. -#}
batch_rows as (
    select batch_date, column_name, sum(row_count) as row_count
    from current_counts
    group by batch_date, column_name
    union all
    select batch_date, column_name, row_count
    from profiled_from_rows
),

-- every bin of the batch's reference set, with the batch's share in it (0 when empty)
shares as (
    select
        batches.batch_date,
        bins.column_name,
        bins.reference_share,
        cast(coalesce(bin_counts.row_count, 0) as {{ dbt.type_float() }}) / batch_rows.row_count as current_share
    from batches
    inner join bins on bins.reference_version = batches.reference_version
    inner join batch_rows on batch_rows.batch_date = batches.batch_date and batch_rows.column_name = bins.column_name
    left join all_bin_counts as bin_counts
        on bin_counts.batch_date = batches.batch_date
        and bin_counts.column_name = bins.column_name
        and bin_counts.bin_index = bins.bin_index
),

psi as (
    select
        batch_date,
        column_name,
        sum({{ modelwatch.psi_term('current_share', 'reference_share') }}) as score
    from shares
    group by batch_date, column_name
),

sql_psi as (
    select
        batch_date,
        column_name,
        cast('sql_psi' as {{ dbt.type_string() }}) as source,
        cast('PSI' as {{ dbt.type_string() }}) as method,
        score,
        cast({{ drift['psi_threshold'] }} as {{ dbt.type_float() }}) as threshold,
        score >= {{ drift['psi_threshold'] }} as drifted,
        cast(null as {{ dbt.type_string() }}) as reason
    from psi
),

unioned as (
    select * from evidently
    union all
    select * from sql_psi
)

select
    cast('{{ m.name }}' as text) as monitor,
    batch_date,
    cast(column_name as text) as column_name,
    cast(source as text) as source,
    cast(method as text) as method,
    cast(score as {{ dbt.type_float() }}) as score,
    cast(threshold as {{ dbt.type_float() }}) as threshold,
    drifted,
    cast(reason as text) as reason
from unioned
