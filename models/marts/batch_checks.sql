{#-
  The data contract, measured: one row per batch and check (and column where
  the check is per column), with its bounds and verdict, for the monitor's
  batches being built. Built-in checks apply to every monitor (bounds from
  vars.monitor_defaults.contract, overridden by the monitor's `contract`); the
  monitor's own `checks` bound the share of rows matching a SQL condition or
  found in a lookup. dbt tests (contract_check) assert on these rows.
-#}
{%- set m = modelwatch.monitor() -%}
{%- set contract = m.get('contract') or {} -%}
{%- set custom = m.get('checks') or {} -%}
{%- set features = modelwatch.feature_columns(m) -%}
{%- set probabilities = modelwatch.probability_columns(m) -%}
{#- Every column profiled as a number, the target included: a NaN label is no label. -#}
{%- set numeric_columns = modelwatch.numeric_columns(m) -%}
{%- set numeric_types = ['double precision', 'real', 'numeric', 'bigint', 'integer', 'smallint'] -%}
{#- Every monitor's lookups are refs at parse time, so that dbt knows what this model reads. #}
{% for declared in var('monitors', {}).values() -%}
{% for lookup in (declared.get('lookups') or {}).values() -%}
-- depends_on: {{ ref(lookup.seed) }}
{% endfor -%}
{% endfor %}

{#-
  The raw rows themselves, not int_batch_rows: a custom condition may name any
  stored column, which int_batch_rows does not keep. Read by two aggregates
  below: not materialized, or PostgreSQL would copy every row first.
-#}
with batch_rows as not materialized (
    {{ modelwatch.monitor_rows(m, modelwatch.rows_relation(m), 'batch_date', modelwatch.in_batch_range('batch_date')) }}
),

batches as (
    select batch_date, batch_end, reference_version, rows_loaded
    from {{ ref('stg_batches') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

{#- Shares of rows, counted in one hashed pass over the rows, grouped by batch; the missing and
    non-finite shares of the columns column_quality profiles are read off it instead (the same
    counts of the same rows: a wide monitor's hundreds of them are not counted twice). The
    target's and the timestamp's are counted here: the contract judges the stored rows, not
    the labels that land later. -#}
{%- set profiled = modelwatch.numeric_columns(m) + modelwatch.categorical_columns(m) -%}
{%- set shares = {} -%}
{%- set profiled_shares = {} -%}
{%- for column in features + [m.timestamp, m.prediction] + probabilities -%}
    {%- if column in profiled and column != m.target -%}
        {%- do profiled_shares.update({'missing_share__' ~ column: (column, 'missing_share')}) -%}
    {%- else -%}
        {%- do shares.update({'missing_share__' ~ column: column ~ ' is null'}) -%}
    {%- endif -%}
{%- endfor -%}
{%- for column in numeric_columns -%}
    {%- if column in profiled and column != m.target -%}
        {%- do profiled_shares.update({'non_finite_share__' ~ column: (column, 'non_finite_share')}) -%}
    {%- else -%}
        {%- do shares.update({'non_finite_share__' ~ column: modelwatch.is_non_finite(column)}) -%}
    {%- endif -%}
{%- endfor -%}
{%- for column in probabilities -%}
    {%- do shares.update({'probability_out_of_range_share__' ~ column: column ~ ' < 0 or ' ~ column ~ ' > 1'}) -%}
{%- endfor -%}
{%- if m.task == 'multiclass_classification' -%}
    {%- do shares.update({'probability_sum_off_share':
        'abs(' ~ probabilities | join(' + ') ~ ' - 1) > ' ~ modelwatch.check_spec(m, 'probability_sum_off_share').get('tolerance', 0.000001)}) -%}
{%- endif -%}
{%- for name, spec in custom.items() -%}
    {%- if spec.get('where') -%}
        {%- do shares.update({'custom__' ~ name: spec.where}) -%}
    {%- else -%}
        {%- set lookup = m.lookups[spec.lookup] -%}
        {%- for column in spec.columns -%}
            {%- do shares.update({'custom__' ~ name ~ '__' ~ column:
                'cast(' ~ column ~ ' as ' ~ dbt.type_string() ~ ') in (select cast(' ~ lookup.key
                ~ ' as ' ~ dbt.type_string() ~ ') from ' ~ ref(lookup.seed)
                ~ (' where ' ~ spec.lookup_where if spec.get('lookup_where') else '') ~ ')'}) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endfor %}

row_shares as (
    select
        batch_rows.batch_date,
        count(*) as row_count,
        {{ modelwatch.share_where(m.timestamp ~ ' < batches.batch_date or ' ~ m.timestamp
                                  ~ ' >= batches.batch_end + 1') }} as outside_period_share{{ ',' if shares }}
        {%- for name, condition in shares.items() %}
        {{ modelwatch.share_where(condition) }} as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    from batch_rows
    inner join batches on batches.batch_date = batch_rows.batch_date
    group by batch_rows.batch_date
),

{#- Per batch and profiled column, its missing and non-finite shares as column_quality has them,
    read off the same counts (int_value_counts, int_numeric_profile) rather than off
    column_quality, so that the contract is measured beside it, not after it. -#}
profiled_counts as (
    select
        batch_date,
        column_name,
        cast(coalesce(sum(row_count) filter (where value is null and category is null), 0) as {{ dbt.type_float() }})
            / nullif(sum(row_count), 0) as missing_share,
        cast(coalesce(sum(row_count) filter (where {{ modelwatch.is_non_finite('value') }}), 0) as {{ dbt.type_float() }})
            / nullif(sum(row_count), 0) as non_finite_share
    from {{ ref('int_value_counts') }}
    group by batch_date, column_name

    union all
    select
        batch_date,
        column_name,
        cast(missing_count as {{ dbt.type_float() }}) / nullif(row_count, 0),
        cast(non_finite_count as {{ dbt.type_float() }}) / nullif(row_count, 0)
    from {{ ref('int_numeric_profile') }}
),

{#- One row per batch: those shares, a column each. -#}
profiled_shares as (
    select
        batch_date
        {%- for name, (column, metric) in profiled_shares.items() %},
        max({{ metric }}) filter (where column_name = '{{ column }}') as {{ name }}
        {%- endfor %}
    from profiled_counts
    group by batch_date
),

{#- count(distinct) sorts its input: only (batch_date, id), a fraction of every row's columns. -#}
duplicates as (
    select batch_date, count({{ m.id }}) - count(distinct {{ m.id }}) as duplicate_ids
    from batch_rows
    group by batch_date
),

{#- Every batch of the range; one without rows has 0 rows (row_count_min fails it) and its
    shares are null: nothing was measured. -#}
per_batch as (
    select
        batches.batch_date,
        coalesce(row_shares.row_count, 0) as row_count,
        coalesce(duplicates.duplicate_ids, 0) as duplicate_ids,
        row_shares.outside_period_share
        {%- for name in shares %},
        row_shares.{{ name }}
        {%- endfor %}
        {%- for name in profiled_shares %},
        profiled_shares.{{ name }}
        {%- endfor %}
    from batches
    left join row_shares on row_shares.batch_date = batches.batch_date
    left join profiled_shares on profiled_shares.batch_date = batches.batch_date
    left join duplicates on duplicates.batch_date = batches.batch_date
),

volume as (
    select
        batch_date,
        case when earlier_batches >= {{ modelwatch.check_spec(m, 'row_count_vs_trailing_median').get('min_history', 1) }}
             then rows_vs_trailing_median end as rows_vs_trailing_median
    from {{ ref('int_batch_volume') }}
    where monitor = '{{ m.name }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

{#-
  Against the batch's reference set: rows whose category the reference never
  saw, and numbers outside its range, per feature, read off the batch's
  frequency table (int_value_counts) rather than its rows.
-#}
reference_checks as (
    select
        counts.batch_date,
        counts.column_name,
        cast(coalesce(sum(counts.row_count) filter (
            where (counts.category is not null and seen.category is null)
               or ({{ modelwatch.is_finite('counts.value') }} and (counts.value < reference_range.min_value
                                                 or counts.value > reference_range.max_value))
        ), 0) as {{ dbt.type_float() }}) / nullif(sum(counts.row_count), 0) as share_outside_reference
    from {{ ref('int_value_counts') }} as counts
    inner join batches on batches.batch_date = counts.batch_date
    {#- Joins, not a subquery per value: a wide batch's frequency table has millions of rows. #}
    left join {{ ref('int_reference_profile') }} as seen
        on seen.monitor = '{{ m.name }}' and seen.reference_version = batches.reference_version
        and seen.column_name = counts.column_name and seen.category = counts.category
    left join {{ ref('int_reference_profile') }} as reference_range
        on reference_range.monitor = '{{ m.name }}' and reference_range.reference_version = batches.reference_version
        and reference_range.column_name = counts.column_name and reference_range.category is null
    where counts.column_name in ('{{ features | join("', '") }}')
    group by counts.batch_date, counts.column_name

    {#- Numeric features profiled from their rows (int_numeric_profile) count their own. #}
    union all
    select
        profile.batch_date,
        profile.column_name,
        cast(coalesce(profile.outside_reference_count, 0) as {{ dbt.type_float() }}) / nullif(profile.row_count, 0)
    from {{ ref('int_numeric_profile') }} as profile
    inner join batches on batches.batch_date = profile.batch_date
    where profile.column_name in ('{{ features | join("', '") }}')
),

{#- The declared columns the raw table must have, with a type that fits their role. -#}
schema_check as (
    select
        batches.batch_date,
        (
            select count(*)
            from (
                {% for column in modelwatch.stored_column_names(m) if column not in (m.get('derived') or {}) -%}
                select '{{ column }}' as column_name,
                       {{ 'true' if column in modelwatch.numeric_columns(m) else 'false' }} as is_numeric
                {{ 'union all' if not loop.last }}
                {% endfor -%}
            ) as expected
            left join information_schema.columns as actual
                on actual.table_schema = '{{ modelwatch.rows_relation(m).schema }}'
                and actual.table_name = '{{ modelwatch.rows_relation(m).identifier }}'
                and actual.column_name = expected.column_name
            where actual.column_name is null
               or (expected.is_numeric and actual.data_type not in ('{{ numeric_types | join("', '") }}'))
        ) as schema_mismatches
    from batches
),

{#- One row per batch and check. The checks measured on per_batch (a column of it each) and
    those read off reference_checks (a row of it each) are each one select over a list of
    checks, not a select per check: hundreds of branches of a union cost PostgreSQL more to
    plan than to run. -#}
checks as (
    {{ modelwatch.contract_check(m, 'schema_mismatches', 'schema_mismatches', 'schema_check') }}
    union all
    {{ modelwatch.contract_check(m, 'row_count_vs_trailing_median', 'rows_vs_trailing_median', 'volume') }}
    union all
    select per_batch.batch_date, per_check.*
    from per_batch
    cross join lateral (
        values
        {{ modelwatch.contract_row(m, 'row_count_min', 'per_batch.row_count') }},
        {{ modelwatch.contract_row(m, 'duplicate_ids', 'per_batch.duplicate_ids') }},
        {{ modelwatch.contract_row(m, 'outside_period_share', 'per_batch.outside_period_share') }}
        {%- for column in features + [m.timestamp, m.prediction] + probabilities %},
        {{ modelwatch.contract_row(m, 'missing_share', 'per_batch.missing_share__' ~ column, column) }}
        {%- endfor %}
        {%- for column in numeric_columns %},
        {{ modelwatch.contract_row(m, 'non_finite_share', 'per_batch.non_finite_share__' ~ column, column) }}
        {%- endfor %}
        {%- for column in probabilities %},
        {{ modelwatch.contract_row(m, 'probability_out_of_range_share',
                                   'per_batch.probability_out_of_range_share__' ~ column, column) }}
        {%- endfor %}
        {%- if m.task == 'multiclass_classification' %},
        {{ modelwatch.contract_row(m, 'probability_sum_off_share', 'per_batch.probability_sum_off_share') }}
        {%- endif %}
        {%- for name, spec in custom.items() %}
        {%- if spec.get('where') %},
        {{ modelwatch.contract_row(m, name, 'per_batch.custom__' ~ name) }}
        {%- else %}
        {%- for column in spec.columns %},
        {{ modelwatch.contract_row(m, name, 'per_batch.custom__' ~ name ~ '__' ~ column, column) }}
        {%- endfor %}
        {%- endif %}
        {%- endfor %}
    ) as per_check (check_name, column_name, measured_value, lower_bound, upper_bound, severity)
    {%- set reference_checked = [] %}
    {%- for column in m.features.get('categorical') or [] %}
    {%- do reference_checked.append(('unseen_category_share', column)) %}
    {%- endfor %}
    {%- for column in m.features.get('numeric') or [] %}
    {%- do reference_checked.append(('out_of_reference_range_share', column)) %}
    {%- endfor %}
    {%- if reference_checked %}
    union all
    select reference_checks.batch_date, per_check.*
    from reference_checks
    cross join lateral (
        values
        {%- for check_name, column in reference_checked %}
        {{ modelwatch.contract_row(m, check_name, 'reference_checks.share_outside_reference', column) }}
        {{- ',' if not loop.last }}
        {%- endfor %}
    ) as per_check (check_name, column_name, measured_value, lower_bound, upper_bound, severity)
    where per_check.column_name = reference_checks.column_name
    {%- endif %}
)

select
    cast('{{ m.name }}' as text) as monitor,
    batch_date,
    check_name,
    column_name,
    measured_value,
    lower_bound,
    upper_bound,
    severity,
    -- a value that cannot be measured (no history for the volume band) passes
    coalesce(
        (lower_bound is null or measured_value >= lower_bound)
        and (upper_bound is null or measured_value <= upper_bound),
        true
    ) as passed
from checks
