{#-
  The nyc_taxi monitor's own mart: one row per batch, volume and the typical trip.
  Built for the taxi's batches only (a build of another monitor selects nothing). A figure column_quality
  already has (the mean and p50 of a monitored column) is taken from it rather
  than sorted again: on 3 million rows each median is a sort of its own.
-#}
{%- if modelwatch.no_rows_unless_monitor('nyc_taxi') %}
{{ modelwatch.no_rows_of_this_model() }}
{%- else %}
{%- set m = modelwatch.monitor('nyc_taxi') -%}
{%- set profiled = modelwatch.numeric_columns(m) -%}
{%- set columns = ['duration_min', 'trip_distance', 'fare_amount', 'total_amount'] -%}
{%- set boroughs = ['Manhattan', 'Brooklyn', 'Queens', 'Bronx', 'Staten Island', 'EWR'] -%}

with scored as (
    select * from {{ ref('int_batch_rows') }}
    where monitor = 'nyc_taxi'
),

zones as (
    select * from {{ ref('taxi_zones') }}
),

profiles as (
    select batch_date, column_name, mean_value, p50
    from {{ ref('column_quality') }}
    where monitor = 'nyc_taxi' and {{ modelwatch.in_batch_range('batch_date') }}
),

per_batch as (
    select
        scored.batch_date,
        count(*) as trips,
        {% for column in columns if column not in profiled -%}
        {#- as column_quality: a non-finite value (counted by the contract) enters no figure #}
        cast(avg(scored.{{ column }}) filter (where {{ modelwatch.is_finite('scored.' ~ column) }}) as {{ dbt.type_float() }}) as mean_{{ column }},
        cast(percentile_cont(0.5) within group (order by scored.{{ column }})
             filter (where {{ modelwatch.is_finite('scored.' ~ column) }}) as {{ dbt.type_float() }}) as p50_{{ column }},
        {% endfor -%}
        {% for borough in boroughs -%}
        count(*) filter (where zones.borough = '{{ borough }}') as pickups_{{ borough | lower | replace(' ', '_') }},
        {% endfor -%}
        count(*) filter (where zones.borough is null or zones.borough not in ('{{ boroughs | join("', '") }}')) as pickups_unknown_borough
    from scored
    left join zones on cast(zones.location_id as text) = scored.pu_location_id  -- zone ids are categories (text)
    group by scored.batch_date
)

select
    cast('nyc_taxi' as text) as monitor,
    per_batch.batch_date,
    per_batch.trips,
    {% for column in columns -%}
    {% if column in profiled -%}
    profile_{{ column }}.mean_value as mean_{{ column }},
    profile_{{ column }}.p50 as p50_{{ column }},
    {% else -%}
    per_batch.mean_{{ column }},
    per_batch.p50_{{ column }},
    {% endif -%}
    {% endfor -%}
    {% for borough in boroughs -%}
    per_batch.pickups_{{ borough | lower | replace(' ', '_') }},
    {% endfor -%}
    per_batch.pickups_unknown_borough
from per_batch
{% for column in columns if column in profiled -%}
left join profiles as profile_{{ column }}
    on profile_{{ column }}.batch_date = per_batch.batch_date
    and profile_{{ column }}.column_name = '{{ column }}'
{% endfor %}
{%- endif %}
