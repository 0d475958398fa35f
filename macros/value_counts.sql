{#-
  Frequency tables: how many rows hold each value of each column. Every
  distribution figure of a batch (missing counts, quantiles, mean and spread,
  PSI bins, category shares) is derived from one, so a batch is read once for
  all its columns instead of once (and sorted once) per column.
-#}

{#-
  Rows of `relation` counted per key and value of each column, in one scan
  (GROUPING SETS: one hash table per column), as long rows:
  keys... (none: one group of all the rows), column_name, value (a numeric column's value, as float), category
  (a categorical column's value, as text), row_count. A column's missing
  values are its row with a null value and a null category.
-#}
{% macro value_counts(relation, keys, numeric_columns, categorical_columns) -%}
    {%- set columns = numeric_columns + categorical_columns -%}
    {%- set keyed = (keys | join(', ') ~ ', ') if keys else '' -%}
    {%- if not columns %}
    {#- No column to count: no rows, with the table's columns. #}
    select {{ keyed }}cast(null as {{ dbt.type_string() }}) as column_name,
           cast(null as {{ dbt.type_float() }}) as value, cast(null as {{ dbt.type_string() }}) as category,
           cast(0 as bigint) as row_count
    from {{ relation }}
    where false
    {%- else %}
    select
        {{ keyed }}cast(case
            {%- for column in columns %}
            when grouping({{ column }}) = 0 then '{{ column }}'
            {%- endfor %}
        end as {{ dbt.type_string() }}) as column_name,
        {#- Only the grouped column is non-null in its set's rows: coalesce picks it. #}
        {%- if numeric_columns %}
        coalesce({% for column in numeric_columns %}cast({{ column }} as {{ dbt.type_float() }}){{ ', ' if not loop.last }}{% endfor %}) as value,
        {%- else %}
        cast(null as {{ dbt.type_float() }}) as value,
        {%- endif %}
        {%- if categorical_columns %}
        coalesce({% for column in categorical_columns %}cast({{ column }} as {{ dbt.type_string() }}){{ ', ' if not loop.last }}{% endfor %}) as category,
        {%- else %}
        cast(null as {{ dbt.type_string() }}) as category,
        {%- endif %}
        count(*) as row_count
    from {{ relation }}
    group by grouping sets (
        {%- for column in columns %}
        ({{ keyed }}{{ column }}){{ ',' if not loop.last }}
        {%- endfor %}
    )
    {%- endif %}
{%- endmacro %}

{#-
  percentile_cont of each of `quantiles` (percentages) per key, from a
  frequency table `counts` (keys..., value, row_count; null values ignored):
  the value at position q * (N - 1) of the N sorted values, interpolated
  between the values either side as percentile_cont does (the same float8
  arithmetic, so the same result to the last bit), read off the cumulative
  counts instead of sorting every row. Columns: keys..., p<q> per quantile.
-#}
{% macro percentiles_from_counts(counts, keys, quantiles) -%}
    {%- set key_list = keys | join(', ') -%}
    {%- set float = dbt.type_float() -%}
    select
        {{ key_list }},
        {%- for q in quantiles %}
        {%- set position = 'cast(' ~ (q / 100) ~ ' as ' ~ float ~ ') * cast(max(rows_total) - 1 as ' ~ float ~ ')' %}
        {%- set lower = 'min(value) filter (where rows_upto > floor(' ~ position | replace('max(rows_total)', 'rows_total') ~ '))' %}
        {%- set upper = 'min(value) filter (where rows_upto > ceil(' ~ position | replace('max(rows_total)', 'rows_total') ~ '))' %}
        case
            when floor({{ position }}) = ceil({{ position }}) then {{ lower }}
            else {{ lower }} + ({{ upper }} - {{ lower }}) * ({{ position }} - floor({{ position }}))
        end as p{{ '%02d' % q }}{{ ',' if not loop.last }}
        {%- endfor %}
    from (
        select
            {{ key_list }},
            value,
            -- rows with a value up to this one, and in all: the k-th value (from 0) is the
            -- smallest whose rows_upto exceeds k
            cast(sum(row_count) over (partition by {{ key_list }} order by value rows unbounded preceding) as bigint) as rows_upto,
            cast(sum(row_count) over (partition by {{ key_list }}) as bigint) as rows_total
        from {{ counts }}
        where value is not null
    ) as cumulative
    group by {{ key_list }}
{%- endmacro %}

{#-
  The numeric columns of `columns` to profile from the rows themselves
  (int_numeric_profile: one sort per column) rather than from a frequency
  table: those with many distinct values, where counting each value costs more
  than sorting (a continuous column has about as many values as rows). Read
  off the planner's statistics of `relation`, the monitor's rows (analyzed as
  each build starts: modelwatch.pipeline.load.analyze): a column is counted
  by value where they show few distinct values, profiled from its rows where
  they show many or say nothing (a derived column, a target whose labels came
  later, a table not analyzed yet). On another engine every column is counted
  by value. vars.numeric_profile_from_rows, a list, decides instead (unit tests).
-#}
{% macro numeric_columns_from_rows(relation, columns) -%}
    {%- set chosen = var('numeric_profile_from_rows', none) -%}
    {%- if chosen is not none -%}
        {{ return(columns | select('in', chosen) | list) }}
    {%- endif -%}
    {%- if not execute or not columns -%}
        {{ return([]) }}
    {%- endif -%}
    {{ return(adapter.dispatch('numeric_columns_from_rows', 'modelwatch')(relation, columns)) }}
{%- endmacro %}

{% macro default__numeric_columns_from_rows(relation, columns) -%}
    {{ return([]) }}
{%- endmacro %}

{#- ANALYZE stores n_distinct negative (a share of the rows) when it estimates more distinct
    values than a tenth of the rows, and 0 for a column it found only nulls in. -#}
{% macro postgres__numeric_columns_from_rows(relation, columns) -%}
    {%- set query -%}
        select attname
        from pg_stats
        where schemaname = '{{ relation.schema }}' and tablename = '{{ relation.identifier }}'
          and attname in ('{{ columns | join("', '") }}')
          and n_distinct > 0
    {%- endset -%}
    {%- set counted = run_query(query).columns[0].values() | list -%}
    {{ return(columns | reject('in', counted) | list) }}
{%- endmacro %}

{#-
  percentile_cont of `q` (a percentage) over the `n` values of the sorted float
  array `sorted`: the value at position q * (n - 1), interpolated between the
  values either side as percentile_cont does (the same float8 arithmetic, so
  the same result to the last bit); null when n is 0.
-#}
{% macro percentile_of_sorted(sorted, n, q) -%}
    {%- set float = dbt.type_float() -%}
    {%- set position = '(cast(' ~ (q / 100) ~ ' as ' ~ float ~ ') * cast(' ~ n ~ ' - 1 as ' ~ float ~ '))' -%}
    {%- set lower = sorted ~ '[cast(floor(' ~ position ~ ') as integer) + 1]' -%}
    {%- set upper = sorted ~ '[cast(ceil(' ~ position ~ ') as integer) + 1]' -%}
    case
        when {{ n }} = 0 then null
        when floor({{ position }}) = ceil({{ position }}) then {{ lower }}
        else {{ lower }} + ({{ upper }} - {{ lower }}) * ({{ position }} - floor({{ position }}))
    end
{%- endmacro %}

{#-
  ANALYZE of the reference sets' rows (int_reference_rows), keyed by `key`, for
  the reference models' plans. The profiled columns on a tenth of the usual
  sample: a column's statistics sort its sample (text by collation), which on a
  monitor with a hundred columns of each kind took longer than the models that
  read them, and a few thousand rows tell as well how many distinct values a
  column has (all of them for a continuous one, a few for counts and
  categories), which is all the models ask. (A batch's rows are analyzed as a
  build starts: modelwatch.pipeline.load.analyze.)
-#}
{% macro analyze_numeric_columns(relation, key, numeric, categorical) -%}
    analyze {{ relation }} (monitor, {{ key }})
    {%- if numeric or categorical %};
    set local default_statistics_target = 10;
    analyze {{ relation }} ({{ (numeric + categorical) | join(', ') }})
    {%- endif %}
{%- endmacro %}
