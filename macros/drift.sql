{#-
  Drift in SQL: the population stability index per batch and monitored column
  against bins of the reference set (int_reference_bins). The monitored columns
  come from vars.monitoring, as in the Evidently step: numeric features and the
  prediction are binned at reference deciles, categorical features by category.
-#}

{#- The columns PSI is computed for, by how they are binned. -#}
{% macro drift_numeric_columns() -%}
    {%- set monitoring = var('monitoring') -%}
    {{ return(monitoring.numeric_features + [monitoring.prediction]) }}
{%- endmacro %}

{% macro drift_categorical_columns() -%}
    {{ return(var('monitoring').categorical_features) }}
{%- endmacro %}

{#-
  Rows of `relation` (wide: key columns, model_version and the monitored
  columns) counted per bin of `bins` (int_reference_bins' shape): the key
  columns, column_name, bin_index, row_count. A number falls in the range bin
  with lower_bound < value <= upper_bound (a null bound is open); a category
  in its own bin, else in "other"; a null in the "null" bin. Rows are first
  counted per distinct value, so the binning works on distinct values, and
  each column joins only its own bins, whatever join the planner picks.
  `keys` must include model_version.
-#}
{% macro psi_bin_counts(relation, bins, keys) -%}
    {%- set numeric_columns = modelwatch.drift_numeric_columns() -%}
    {%- set key_list = keys | join(', ') -%}
    {%- set counted_keys = [] -%}
    {%- for key in keys %}{% do counted_keys.append('counted.' ~ key) %}{% endfor -%}
    {%- for column in numeric_columns + modelwatch.drift_categorical_columns() %}
    select
        {{ counted_keys | join(', ') }},
        cast('{{ column }}' as {{ dbt.type_string() }}) as column_name,
        {%- if column in numeric_columns %}
        bins.bin_index,
        {%- else %}
        coalesce(category_bins.bin_index, bins.bin_index) as bin_index,
        {%- endif %}
        sum(counted.row_count) as row_count
    from (
        select
            {{ key_list }},
            cast({{ column }} as {{ dbt.type_float() if column in numeric_columns else dbt.type_string() }}) as value,
            count(*) as row_count
        from {{ relation }}
        group by {{ key_list }}, cast({{ column }} as {{ dbt.type_float() if column in numeric_columns else dbt.type_string() }})
    ) as counted
    inner join {{ bins }} as bins
        on bins.model_version = counted.model_version
        and bins.column_name = '{{ column }}'
        {%- if column in numeric_columns %}
        and (
            (counted.value is null and bins.bin_kind = 'null')
            or (
                counted.value is not null
                and bins.bin_kind = 'range'
                and (bins.lower_bound is null or counted.value > bins.lower_bound)
                and (bins.upper_bound is null or counted.value <= bins.upper_bound)
            )
        )
    {%- else %}
        and bins.bin_kind = case when counted.value is null then 'null' else 'other' end
    left join {{ bins }} as category_bins
        on category_bins.model_version = counted.model_version
        and category_bins.column_name = '{{ column }}'
        and category_bins.bin_kind = 'category'
        and category_bins.category = counted.value
    {%- endif %}
    group by {{ counted_keys | join(', ') }}, {{ 'bins.bin_index' if column in numeric_columns else 'coalesce(category_bins.bin_index, bins.bin_index)' }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#-
  One PSI term: (current - reference) * ln(current / reference), where a share
  of 0 counts as var('drift').psi_epsilon (as Evidently's PSI does), so an empty
  bin adds a large but finite term and a bin empty on both sides adds 0.
-#}
{% macro psi_term(current_share, reference_share) -%}
    {%- set epsilon = var('drift')['psi_epsilon'] -%}
    {%- set current = 'case when ' ~ current_share ~ ' = 0 then cast(' ~ epsilon ~ ' as ' ~ dbt.type_float() ~ ') else ' ~ current_share ~ ' end' -%}
    {%- set reference = 'case when ' ~ reference_share ~ ' = 0 then cast(' ~ epsilon ~ ' as ' ~ dbt.type_float() ~ ') else ' ~ reference_share ~ ' end' -%}
    ({{ current }} - {{ reference }}) * ln(({{ current }}) / ({{ reference }}))
{%- endmacro %}

{#-
  How bins are made, stored with them: a change of vars.drift or of the
  monitored columns re-bins a model version at its next build.
-#}
{% macro psi_binning_label() -%}
    {{ return(
        'deciles: ' ~ modelwatch.drift_numeric_columns() | join(',')
        ~ '; categories: ' ~ modelwatch.drift_categorical_columns() | join(',')
        ~ '; own bin from share ' ~ var('drift')['psi_min_category_share'] ~ ', other, null'
    ) }}
{%- endmacro %}
