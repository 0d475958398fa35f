{#-
  PSI bins per reference set (version) and monitored column of the monitor,
  made once per reference version, with each bin's share of the reference:
  - numeric features and the prediction: ranges between the distinct
    reference deciles (percentile_disc, so every edge is a reference value),
    right-closed and open at both ends: (-inf, d1], (d1, d2], ..., (dk, +inf);
    a column whose deciles coincide (passenger_count) gets fewer bins;
  - categorical features: a bin per category holding at least
    vars.drift.psi_min_category_share of the reference rows; rarer categories
    and values the reference never saw share the "other" bin;
  - every column: a "null" bin, so a change in the share of missing values
    counts as drift.
  Shares are over all reference rows, nulls included: a column's shares sum
  to 1. Incremental: bins every reference version of the monitor that is not
  binned yet, or was binned with other settings (psi_binning_label). Storing a
  reference set (`modelwatch reference`, `train`) builds it, so its bins exist
  before its first batch; a build bins a batch's reference only when it has none.
-#}
{{ config(materialized='incremental', incremental_strategy='delete+insert',
          unique_key=['monitor', 'reference_version'], tags=['reference'],
          pre_hook='{{ modelwatch.build_work_mem() }}') }}
{%- set m = modelwatch.monitor() -%}
{%- set binning = modelwatch.psi_binning_label() -%}
{%- set numeric_columns = modelwatch.drift_numeric_columns() -%}
{%- set categorical_columns = modelwatch.drift_categorical_columns() -%}

with {{ modelwatch.reference_versions_to_do(ref('int_reference_rows'), "monitor = '" ~ m.name ~ "' and binning = '" ~ binning ~ "'") }},

reference_rows as (
    select reference_version, count(*) as row_count
    from reference
    group by reference_version
),

monitored_columns as (
    select reference_rows.reference_version, monitored.column_name, monitored.column_kind
    from reference_rows
    cross join (
        {% for column in numeric_columns + categorical_columns -%}
        select
            cast('{{ column }}' as {{ dbt.type_string() }}) as column_name,
            cast('{{ 'numeric' if column in numeric_columns else 'categorical' }}' as {{ dbt.type_string() }}) as column_kind
        {{ 'union all' if not loop.last }}
        {% endfor -%}
    ) as monitored
),

{#- One scan of the reference for every column's deciles (percentile_disc of an array: one sort
    per column for all nine). #}
deciles as (
    select
        sorted.reference_version,
        per_column.column_name,
        {% for decile in range(1, 10) -%}
        per_column.deciles[{{ decile }}] as d{{ decile }}{{ ',' if not loop.last }}
        {% endfor -%}
    from (
        select
            reference_version
            {%- for column in numeric_columns %},
            {#- a non-finite value is no edge: it sorts beyond every number #}
            percentile_disc(array[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) within group (order by {{ column }})
                filter (where {{ modelwatch.is_finite(column) }}) as {{ column }}__deciles
            {%- endfor %}
        from reference
        group by reference_version
    ) as sorted
    cross join lateral (
        values
        {%- for column in numeric_columns %}
        (cast('{{ column }}' as {{ dbt.type_string() }}), cast({{ column }}__deciles as {{ dbt.type_float() }}[])){{ ',' if not loop.last }}
        {%- endfor %}
    ) as per_column (column_name, deciles)
),

edges as (
    select distinct reference_version, column_name, edge
    from (
        {% for decile in range(1, 10) -%}
        select reference_version, column_name, cast(d{{ decile }} as {{ dbt.type_float() }}) as edge from deciles
        {{ 'union all' if not loop.last }}
        {% endfor -%}
    ) as decile_edges
    where edge is not null
),

range_bins as (
    -- (previous edge, edge], the lowest open below
    select
        reference_version,
        column_name,
        lag(edge) over (partition by reference_version, column_name order by edge) as lower_bound,
        edge as upper_bound
    from edges

    union all

    -- (highest edge, +inf); for a column with no values in the reference, the one range bin
    select deciles.reference_version, deciles.column_name, max(edges.edge), cast(null as {{ dbt.type_float() }})
    from deciles
    left join edges
        on edges.reference_version = deciles.reference_version
        and edges.column_name = deciles.column_name
    group by deciles.reference_version, deciles.column_name
),

{#- Categories counted by value in one scan; numbers are counted from each column's sorted
    values below (one sort per column: a frequency table of a continuous column is as long as
    the reference). -#}
reference_counts as (
    {{ modelwatch.value_counts('reference', ['reference_version'], [], categorical_columns) }}
),

category_counts as (
    select reference_version, column_name, category, row_count
    from reference_counts
    where category is not null
),

all_bins as (
    select
        reference_version, column_name,
        cast('range' as {{ dbt.type_string() }}) as bin_kind,
        lower_bound, upper_bound,
        cast(null as {{ dbt.type_string() }}) as category
    from range_bins

    union all

    select category_counts.reference_version, category_counts.column_name, 'category', null, null, category_counts.category
    from category_counts
    inner join reference_rows on reference_rows.reference_version = category_counts.reference_version
    where cast(category_counts.row_count as {{ dbt.type_float() }}) / reference_rows.row_count
          >= {{ modelwatch.drift_options(m)['psi_min_category_share'] }}

    union all

    select reference_version, column_name, 'other', null, null, null
    from monitored_columns
    where column_kind = 'categorical'

    union all

    select reference_version, column_name, 'null', null, null, null
    from monitored_columns
),

bins as (
    select
        *,
        cast(row_number() over (
            partition by reference_version, column_name
            order by
                case bin_kind when 'range' then 0 when 'category' then 1 when 'other' then 2 else 3 end,
                upper_bound nulls last,
                category
        ) as integer) as bin_index
    from all_bins
),

{#- Materialized, as in feature_drift: a nested loop must not recount per bin. #}
bin_counts as materialized (
    {{ modelwatch.psi_bin_counts('reference_counts', 'bins', ['reference_version']) }}
    {%- if numeric_columns %}

    union all
    {#- A range bin (lower, upper] holds the values at or below its upper bound less those at or
        below its lower one (width_bucket over the sorted values); NaN, which sorts above every
        number, in the first range bin, where the binary search over the bounds puts it; the
        null bin the missing values. #}
    select numeric_values.reference_version, numeric_values.column_name, per_bin.bin_index, per_bin.row_count
    from (
        select sorted.reference_version, per_column.*
        from (
            select
                reference_version
                {%- for column in numeric_columns %}
                {%- set value = 'cast(' ~ column ~ ' as ' ~ dbt.type_float() ~ ')' %},
                array_agg({{ value }} order by {{ value }}) filter (where {{ value }} <> 'NaN') as {{ column }}__values,
                count(*) filter (where {{ value }} = 'NaN') as {{ column }}__nan,
                count(*) - count({{ value }}) as {{ column }}__missing
                {%- endfor %}
            from reference
            group by reference_version
        ) as sorted
        cross join lateral (
            values
            {%- for column in numeric_columns %}
            (cast('{{ column }}' as {{ dbt.type_string() }}), {{ column }}__values, {{ column }}__nan,
             {{ column }}__missing){{ ',' if not loop.last }}
            {%- endfor %}
        ) as per_column (column_name, sorted_values, nan_count, missing_count)
    ) as numeric_values
    cross join lateral (
        select
            bins.bin_index,
            case bins.bin_kind
                when 'null' then numeric_values.missing_count
                else coalesce(width_bucket(bins.upper_bound, numeric_values.sorted_values),
                              coalesce(cardinality(numeric_values.sorted_values), 0))
                     - coalesce(width_bucket(bins.lower_bound, numeric_values.sorted_values), 0)
                     + case when bins.lower_bound is null then numeric_values.nan_count else 0 end
            end as row_count
        from bins
        where bins.reference_version = numeric_values.reference_version
          and bins.column_name = numeric_values.column_name
          and bins.bin_kind in ('range', 'null')
    ) as per_bin
    {%- endif %}
)

select
    cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
    bins.reference_version,
    bins.column_name,
    bins.bin_index,
    bins.bin_kind,
    bins.lower_bound,
    bins.upper_bound,
    bins.category,
    cast(coalesce(bin_counts.row_count, 0) as bigint) as reference_rows,
    cast(coalesce(bin_counts.row_count, 0) as {{ dbt.type_float() }}) / reference_rows.row_count as reference_share,
    cast('{{ binning }}' as {{ dbt.type_string() }}) as binning
from bins
inner join reference_rows on reference_rows.reference_version = bins.reference_version
left join bin_counts
    on bin_counts.reference_version = bins.reference_version
    and bin_counts.column_name = bins.column_name
    and bin_counts.bin_index = bins.bin_index
