{#- One row per batch: volume and the typical trip. -#}
{%- set boroughs = ['Manhattan', 'Brooklyn', 'Queens', 'Bronx', 'Staten Island', 'EWR'] -%}

with scored as (
    select * from {{ ref('int_trips_scored') }}
),

zones as (
    select * from {{ ref('taxi_zones') }}
)

select
    scored.batch_date,
    count(*) as trips,
    {% for column in ['duration_min', 'trip_distance', 'fare_amount', 'total_amount'] -%}
    cast(avg(scored.{{ column }}) as {{ dbt.type_float() }}) as mean_{{ column }},
    cast(percentile_cont(0.5) within group (order by scored.{{ column }}) as {{ dbt.type_float() }}) as p50_{{ column }},
    {% endfor -%}
    {% for borough in boroughs -%}
    count(*) filter (where zones.borough = '{{ borough }}') as pickups_{{ borough | lower | replace(' ', '_') }},
    {% endfor -%}
    count(*) filter (where zones.borough is null or zones.borough not in ('{{ boroughs | join("', '") }}')) as pickups_unknown_borough
from scored
left join zones on zones.location_id = scored.pu_location_id
group by scored.batch_date
