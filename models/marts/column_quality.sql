{#-
  One row per batch and monitored column: completeness and distribution.
  One scan of the batch profiles every numeric column (each sorted once for all
  its quantiles) and one more counts every categorical column's values, so a
  3-million-row batch is read twice, not once per column.
-#}
{%- set monitoring = var('monitoring') -%}
{%- set numeric_columns = monitoring.numeric_features + [monitoring.prediction, monitoring.target] -%}
{%- set categorical_columns = monitoring.categorical_features -%}
{%- set quantiles = [5, 25, 50, 75, 95] -%}
{%- set float = dbt.type_float() -%}

with numeric_profile as (
    select
        batch_date,
        count(*) as row_count,
        {% for column in numeric_columns -%}
        count({{ column }}) as present__{{ column }},
        min({{ column }}) as min__{{ column }},
        percentile_cont(array[{% for q in quantiles %}{{ q / 100 }}{{ ', ' if not loop.last }}{% endfor %}])
            within group (order by {{ column }}) as quantiles__{{ column }},
        max({{ column }}) as max__{{ column }},
        avg({{ column }}) as mean__{{ column }},
        stddev_samp({{ column }}) as stddev__{{ column }}{{ ',' if not loop.last }}
        {% endfor %}
    from {{ ref('int_trips_scored') }}
    group by batch_date
){%- if categorical_columns %},

{#- Rows per batch, column and value: the columns unpivoted in one scan. -#}
value_counts as (
    select
        scored.batch_date,
        unpivoted.column_name,
        unpivoted.value,
        count(*) as n
    from {{ ref('int_trips_scored') }} as scored
    cross join lateral (
        values
        {% for column in categorical_columns -%}
        ('{{ column }}', cast(scored.{{ column }} as text)){{ ',' if not loop.last }}
        {% endfor %}
    ) as unpivoted (column_name, value)
    group by 1, 2, 3
),

known_zones as (
    select cast(location_id as text) as value
    from {{ ref('taxi_zones') }}
    where borough <> 'Unknown'
),

categorical_profile as (
    select
        counts.batch_date,
        counts.column_name,
        cast(sum(counts.n) as bigint) as row_count,
        cast(coalesce(sum(counts.n) filter (where counts.value is null), 0) as bigint) as missing_count,
        cast(count(counts.value) as bigint) as distinct_count,
        cast(max(counts.n) filter (where counts.value is not null) as {{ float }})
            / nullif(sum(counts.n) filter (where counts.value is not null), 0) as top_value_share,
        {% if monitoring.zone_columns -%}
        case when counts.column_name in ('{{ monitoring.zone_columns | join("', '") }}') then
            cast(sum(counts.n) filter (where counts.value is not null and known_zones.value is null) as {{ float }})
            / nullif(sum(counts.n) filter (where counts.value is not null), 0)
        end
        {%- else -%}
        cast(null as {{ float }})
        {%- endif %} as unknown_zone_share
    from value_counts as counts
    left join known_zones on known_zones.value = counts.value
    group by counts.batch_date, counts.column_name
){%- endif %}


{% for column in numeric_columns %}
{{ 'union all' if not loop.first }}
select
    batch_date,
    cast('{{ column }}' as text) as column_name,
    cast('numeric' as text) as column_kind,
    row_count,
    row_count - present__{{ column }} as missing_count,
    cast(row_count - present__{{ column }} as {{ float }}) / nullif(row_count, 0) as missing_share,
    cast(min__{{ column }} as {{ float }}) as min_value,
    {% for q in quantiles -%}
    cast(quantiles__{{ column }}[{{ loop.index }}] as {{ float }}) as p{{ '%02d' % q }},
    {% endfor -%}
    cast(max__{{ column }} as {{ float }}) as max_value,
    cast(mean__{{ column }} as {{ float }}) as mean_value,
    cast(stddev__{{ column }} as {{ float }}) as stddev_value,
    cast(null as bigint) as distinct_count,
    cast(null as {{ float }}) as top_value_share,
    cast(null as {{ float }}) as unknown_zone_share
from numeric_profile
{% endfor %}

{% if categorical_columns %}
union all
select
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
    cast(unknown_zone_share as {{ float }}) as unknown_zone_share
from categorical_profile
{% endif %}
