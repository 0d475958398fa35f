{#- One row per batch, dbt test and invocation: the contract's history (raw keeps every run). -#}
{{ config(tags=['run_results']) }}

select
    monitor,
    batch_date,
    invocation_id,
    executed_at,
    test_name,
    coalesce(column_name, '') as column_name,
    test_status,
    failure_count,
    message
from {{ ref('stg_dbt_test_runs') }}
where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }}
