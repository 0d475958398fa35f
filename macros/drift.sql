{#-
  Drift in SQL: the population stability index per batch and monitored column
  against bins of the reference set (int_reference_bins). The monitored columns
  come from the monitor's declaration, as in the Evidently step: numeric features and the
  prediction are binned at reference deciles, categorical features by category.
-#}

{#-
  A frequency table (macros/value_counts.sql: keys..., column_name, value,
  category, row_count) counted per bin of `bins` (int_reference_bins' shape):
  keys..., column_name, bin_index, row_count. A number falls in the range bin
  with lower_bound < value <= upper_bound (a null bound is open); a category
  in its own bin, else in "other"; a missing value in the "null" bin. The
  binning works on distinct values, not rows. `keys` must include
  reference_version.
-#}
{% macro psi_bin_counts(counts, bins, keys) -%}
    {%- set numeric_columns = modelwatch.drift_numeric_columns() -%}
    {%- set categorical_columns = modelwatch.drift_categorical_columns() -%}
    {%- set counted_keys = [] -%}
    {%- for key in keys %}{% do counted_keys.append('counted.' ~ key) %}{% endfor -%}
    {%- if numeric_columns %}
    {#-
      A value's range bin by binary search (width_bucket) over the column's upper
      bounds, not by testing it against every bin. The ranges are numbered in
      order of their upper bound (int_reference_bins), so value v falls in range
      number 1 + (the bounds below v). width_bucket counts the thresholds at or
      below its operand: over the negated bounds, those at or above v, which
      the k bounds minus it turns into those below v.
    -#}
    select {{ counted_keys | join(', ') }}, counted.column_name, binned.bin_index, sum(counted.row_count) as row_count
    from {{ counts }} as counted
    inner join (
        select
            reference_version,
            column_name,
            coalesce(array_agg(-upper_bound order by -upper_bound) filter (where upper_bound is not null),
                     cast(array[] as {{ dbt.type_float() }}[])) as negated_bounds,
            min(bin_index) filter (where bin_kind = 'range') as first_range_bin,
            min(bin_index) filter (where bin_kind = 'null') as null_bin
        from {{ bins }}
        where bin_kind in ('range', 'null')
        group by reference_version, column_name
    ) as ranges
        on ranges.reference_version = counted.reference_version
        and ranges.column_name = counted.column_name
    cross join lateral (
        select case
            when counted.value is null then ranges.null_bin
            else ranges.first_range_bin + cardinality(ranges.negated_bounds)
                 - width_bucket(-counted.value, ranges.negated_bounds)
        end as bin_index
    ) as binned
    where counted.column_name in ('{{ numeric_columns | join("', '") }}')
    group by {{ counted_keys | join(', ') }}, counted.column_name, binned.bin_index
    {%- endif %}
    {%- if numeric_columns and categorical_columns %}
    union all
    {%- endif %}
    {%- if categorical_columns %}
    select
        {{ counted_keys | join(', ') }},
        counted.column_name,
        coalesce(category_bins.bin_index, bins.bin_index) as bin_index,
        sum(counted.row_count) as row_count
    from {{ counts }} as counted
    inner join {{ bins }} as bins
        on bins.reference_version = counted.reference_version
        and bins.column_name = counted.column_name
        and bins.bin_kind = case when counted.category is null then 'null' else 'other' end
    left join {{ bins }} as category_bins
        on category_bins.reference_version = counted.reference_version
        and category_bins.column_name = counted.column_name
        and category_bins.bin_kind = 'category'
        and category_bins.category = counted.category
    where counted.column_name in ('{{ categorical_columns | join("', '") }}')
    group by {{ counted_keys | join(', ') }}, counted.column_name, coalesce(category_bins.bin_index, bins.bin_index)
    {%- endif %}
{%- endmacro %}

{#-
  One PSI term: (current - reference) * ln(current / reference), where a share
  of 0 counts as the monitor's psi_epsilon (as Evidently's PSI does), so an empty
  bin adds a large but finite term and a bin empty on both sides adds 0.
-#}
{% macro psi_term(current_share, reference_share) -%}
    {%- set epsilon = modelwatch.drift_options()['psi_epsilon'] -%}
    {%- set current = 'case when ' ~ current_share ~ ' = 0 then cast(' ~ epsilon ~ ' as ' ~ dbt.type_float() ~ ') else ' ~ current_share ~ ' end' -%}
    {%- set reference = 'case when ' ~ reference_share ~ ' = 0 then cast(' ~ epsilon ~ ' as ' ~ dbt.type_float() ~ ') else ' ~ reference_share ~ ' end' -%}
    ({{ current }} - {{ reference }}) * ln(({{ current }}) / ({{ reference }}))
{%- endmacro %}

{#-
  How bins are made, stored with them: after a change of the drift settings or
  of the monitored columns, the next run of the reference models (storing a
  reference set) re-bins every reference version of the monitor.
-#}
{% macro psi_binning_label() -%}
    {{ return(
        'deciles: ' ~ modelwatch.drift_numeric_columns() | join(',')
        ~ '; categories: ' ~ modelwatch.drift_categorical_columns() | join(',')
        ~ '; own bin from share ' ~ modelwatch.drift_options()['psi_min_category_share'] ~ ', other, null'
    ) }}
{%- endmacro %}

{#- vars.drift, with the monitor's own `drift` key merged over it. -#}
{% macro drift_options(m=none) -%}
    {%- set m = m or modelwatch.monitor() -%}
    {{ return(modelwatch.deep_merge(var('drift'), m.get('drift') or {})) }}
{%- endmacro %}
