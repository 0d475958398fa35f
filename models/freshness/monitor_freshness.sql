{#-
  What the freshness checks need of each declared monitor: how many batches it
  has judged (in batch_health with their tests run: a batch that errored
  delivered nothing), the latest one, when its tests ran, and the monitor's
  stale_after. Rebuilt whole after each build's run results; readers compare
  last_batch_at with their own now() (the freshness alert rule, `modelwatch
  status`, `modelwatch check-freshness`). Silence is measured from when batches
  ran, not from their batch_date, so a backfill of old data counts as
  arriving; a monitor that never had a batch was not expected to have one yet.
-#}
{{ config(materialized='table', tags=['run_results']) }}

with declared as (
    select * from (values
        {%- for name in var('monitors', {}) %}
        {%- set m = modelwatch.monitor(name) %}
        (cast('{{ name }}' as text), cast('{{ m.batch_period }}' as text), interval '{{ modelwatch.stale_after(m) }}'){{ ',' if not loop.last }}
        {%- endfor %}
    ) as monitors (monitor, batch_period, stale_after)
),

delivered as (
    select
        monitor,
        max(batch_date) as latest_batch_date,
        max(tested_at) as last_batch_at,
        count(*) as batches
    from {{ ref('batch_health') }}
    where status <> 'untested'
    group by monitor
)

select
    declared.monitor,
    declared.batch_period,
    declared.stale_after,
    coalesce(delivered.batches, 0) as batches,
    delivered.latest_batch_date,
    delivered.last_batch_at
from declared
left join delivered on delivered.monitor = declared.monitor
