{#-
  The data contract, measured: one row per batch and check (and column where
  the check is per column), with its bounds and verdict. dbt tests
  (contract_check) assert on these rows for the batches being built.
-#}
{%- set monitoring = var('monitoring') -%}
{%- set features = monitoring.numeric_features + monitoring.categorical_features -%}
{%- set contract = var('contract') -%}
{%- set duration = contract['duration_out_of_range_share'] -%}
{%- set numeric_types = ['double precision', 'real', 'numeric', 'bigint', 'integer', 'smallint'] -%}

{#-
  The trips themselves, not int_trips_scored: no check reads a prediction, so
  this mart is built beside the trips-predictions join instead of after it
  (on a 3-million-row batch, 5 s off the build's longest path). Read by two
  aggregates below: not materialized, or PostgreSQL would copy every trip first.
-#}
with scored as not materialized (
    select * from {{ ref('stg_trips') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
),

batches as (
    select batch_date, rows_loaded
    from {{ ref('stg_batches') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
),

{#-
  The shares are counted in one hashed pass over the trips, grouped by batch;
  the duplicate count on its own: count(distinct) makes PostgreSQL sort its
  input, and sorting only (batch_date, trip_id) costs a fraction of sorting
  every trip's columns (1.2 s vs 4.4 s on 3 million rows).
-#}
{%- set shares = {
    'negative_fare_share': 'fare_amount < 0',
    'duration_out_of_range_share': 'duration_min <= ' ~ duration['min_minutes'] ~ ' or duration_min > ' ~ duration['max_minutes'],
    'zero_distance_share': 'trip_distance = 0',
    'pickup_outside_day_share': 'cast(pickup_datetime as date) <> batch_date',
} -%}
{%- for column in features + [monitoring.timestamp] -%}
    {%- do shares.update({'missing_share__' ~ column: column ~ ' is null'}) -%}
{%- endfor -%}
{%- for column in monitoring.zone_columns -%}
    {%- do shares.update({'known_zone_share__' ~ column:
        column ~ ' in (select location_id from ' ~ ref('taxi_zones') ~ " where borough <> 'Unknown')"}) -%}
{%- endfor %}

trip_shares as (
    select
        batch_date,
        count(*) as row_count,
        {%- for name, condition in shares.items() %}
        {{ modelwatch.share_where(condition) }} as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    from scored
    group by batch_date
),

duplicates as (
    select batch_date, count(trip_id) - count(distinct trip_id) as duplicate_trip_ids
    from scored
    group by batch_date
),

{#- Every batch of the range; one without trips has 0 rows (row_count_min fails it) and its
    shares are null: nothing was measured. -#}
per_batch as (
    select
        batches.batch_date,
        coalesce(trip_shares.row_count, 0) as row_count,
        coalesce(duplicates.duplicate_trip_ids, 0) as duplicate_trip_ids,
        {%- for name in shares %}
        trip_shares.{{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    from batches
    left join trip_shares on trip_shares.batch_date = batches.batch_date
    left join duplicates on duplicates.batch_date = batches.batch_date
),

volume as (
    select batch_date, rows_vs_trailing_median
    from {{ ref('int_batch_volume') }}
    where {{ modelwatch.in_batch_range('batch_date') }}
),

{#- The monitored columns the raw tables must have, with a type that fits their kind. -#}
schema_check as (
    select
        batches.batch_date,
        (
            select count(*)
            from (
                {% for column in monitoring.numeric_features %}
                select '{{ column }}' as column_name, true as is_numeric union all
                {% endfor %}
                {% for column in monitoring.categorical_features %}
                select '{{ column }}', false union all
                {% endfor %}
                select '{{ monitoring.timestamp }}', false
            ) as expected
            left join information_schema.columns as actual
                on actual.table_schema = '{{ source('raw', 'trips').schema }}'
                and actual.table_name = '{{ source('raw', 'trips').identifier }}'
                and actual.column_name = expected.column_name
            where actual.column_name is null
               or (expected.is_numeric and actual.data_type not in ('{{ numeric_types | join("', '") }}'))
        ) as schema_mismatches
    from batches
),

checks as (
    {{ modelwatch.contract_check('schema_mismatches', 'schema_mismatches', 'schema_check') }}
    union all
    {{ modelwatch.contract_check('row_count_min', 'row_count', 'per_batch') }}
    union all
    {{ modelwatch.contract_check('row_count_vs_trailing_median', 'rows_vs_trailing_median', 'volume') }}
    union all
    {{ modelwatch.contract_check('duplicate_trip_ids', 'duplicate_trip_ids', 'per_batch') }}
    union all
    {{ modelwatch.contract_check('negative_fare_share', 'negative_fare_share', 'per_batch') }}
    union all
    {{ modelwatch.contract_check('duration_out_of_range_share', 'duration_out_of_range_share', 'per_batch') }}
    union all
    {{ modelwatch.contract_check('zero_distance_share', 'zero_distance_share', 'per_batch') }}
    union all
    {{ modelwatch.contract_check('pickup_outside_day_share', 'pickup_outside_day_share', 'per_batch') }}
    {% for column in features + [monitoring.timestamp] %}
    union all
    {{ modelwatch.contract_check('missing_share', 'missing_share__' ~ column, 'per_batch', column) }}
    {% endfor %}
    {% for column in monitoring.zone_columns %}
    union all
    {{ modelwatch.contract_check('known_zone_share', 'known_zone_share__' ~ column, 'per_batch', column) }}
    {% endfor %}
)

select
    batch_date,
    check_name,
    column_name,
    measured_value,
    lower_bound,
    upper_bound,
    severity,
    -- a value that cannot be measured (no history for the band) passes
    coalesce(
        (lower_bound is null or measured_value >= lower_bound)
        and (upper_bound is null or measured_value <= upper_bound),
        true
    ) as passed
from checks
