{#- One row per batch and monitored column: completeness and distribution. -#}
{%- set monitoring = var('monitoring') -%}
{%- set numeric_columns = monitoring.numeric_features + [monitoring.prediction, monitoring.target] -%}

with scored as (
    select * from {{ ref('int_trips_scored') }}
),

zones as (
    select location_id from {{ ref('taxi_zones') }} where borough <> 'Unknown'
)

{% for column in numeric_columns %}
{{ 'union all' if not loop.first }}
select
    batch_date,
    cast('{{ column }}' as text) as column_name,
    cast('numeric' as text) as column_kind,
    count(*) as row_count,
    count(*) - count({{ column }}) as missing_count,
    cast(count(*) - count({{ column }}) as {{ dbt.type_float() }}) / nullif(count(*), 0) as missing_share,
    cast(min({{ column }}) as {{ dbt.type_float() }}) as min_value,
    {% for q in [5, 25, 50, 75, 95] -%}
    cast(percentile_cont({{ q / 100 }}) within group (order by {{ column }}) as {{ dbt.type_float() }}) as p{{ '%02d' % q }},
    {% endfor -%}
    cast(max({{ column }}) as {{ dbt.type_float() }}) as max_value,
    cast(avg({{ column }}) as {{ dbt.type_float() }}) as mean_value,
    cast(stddev_samp({{ column }}) as {{ dbt.type_float() }}) as stddev_value,
    cast(null as bigint) as distinct_count,
    cast(null as {{ dbt.type_float() }}) as top_value_share,
    cast(null as {{ dbt.type_float() }}) as unknown_zone_share
from scored
group by batch_date
{% endfor %}

{% for column in monitoring.categorical_features %}
union all
select
    counts.batch_date,
    cast('{{ column }}' as text) as column_name,
    cast('categorical' as text) as column_kind,
    cast(sum(counts.n) as bigint) as row_count,
    cast(coalesce(sum(counts.n) filter (where counts.value is null), 0) as bigint) as missing_count,
    cast(coalesce(sum(counts.n) filter (where counts.value is null), 0) as {{ dbt.type_float() }}) / nullif(sum(counts.n), 0) as missing_share,
    {% for name in ['min_value', 'p05', 'p25', 'p50', 'p75', 'p95', 'max_value', 'mean_value', 'stddev_value'] -%}
    cast(null as {{ dbt.type_float() }}) as {{ name }},
    {% endfor -%}
    cast(count(counts.value) as bigint) as distinct_count,
    cast(max(counts.n) filter (where counts.value is not null) as {{ dbt.type_float() }})
        / nullif(sum(counts.n) filter (where counts.value is not null), 0) as top_value_share,
    {% if column in monitoring.zone_columns -%}
    cast(sum(counts.n) filter (where counts.value is not null and counts.known_zone is null) as {{ dbt.type_float() }})
        / nullif(sum(counts.n) filter (where counts.value is not null), 0) as unknown_zone_share
    {%- else -%}
    cast(null as {{ dbt.type_float() }}) as unknown_zone_share
    {%- endif %}
from (
    select
        scored.batch_date,
        cast(scored.{{ column }} as text) as value,
        {% if column in monitoring.zone_columns -%}
        max(zones.location_id) as known_zone,
        {%- else -%}
        cast(null as integer) as known_zone,
        {%- endif %}
        count(*) as n
    from scored
    {% if column in monitoring.zone_columns -%}
    left join zones on zones.location_id = scored.{{ column }}
    {%- endif %}
    group by 1, 2
) as counts
group by counts.batch_date
{% endfor %}
