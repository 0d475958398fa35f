{{ config(materialized='view') }}
{#-
  Each batch's rows against the median rows of up to 7 earlier batches of its
  monitor (the volume band). A view over the batch log, not filtered by the batch
  range, so it can be unit tested; filters on monitor and batch_date push down into it.
-#}
with batches as (
    select monitor, batch_date, rows_loaded
    from {{ ref('stg_batches') }}
    where rows_loaded is not null
)

select
    batches.monitor,
    batches.batch_date,
    batches.rows_loaded,
    history_stats.earlier_batches,
    history_stats.median_rows as trailing_median_rows,
    cast(batches.rows_loaded as {{ dbt.type_float() }}) / nullif(history_stats.median_rows, 0) as rows_vs_trailing_median
from batches
cross join lateral (
    select
        count(*) as earlier_batches,
        cast(percentile_cont(0.5) within group (order by earlier.rows_loaded) as {{ dbt.type_float() }}) as median_rows
    from (
        -- stg_batches again, not the CTE: a CTE used twice is materialised and a
        -- filter on batch_date would no longer reach it (quadratic in history)
        select history.rows_loaded
        from {{ ref('stg_batches') }} as history
        where history.rows_loaded is not null
          and history.monitor = batches.monitor
          and history.batch_date < batches.batch_date
        order by history.batch_date desc
        limit 7
    ) as earlier
) as history_stats
