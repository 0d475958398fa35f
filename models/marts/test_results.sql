{#- One row per batch, dbt test and invocation: the contract's history (raw keeps every run). -#}
{{ config(tags=['run_results']) }}

select
    batch_date,
    invocation_id,
    executed_at,
    test_name,
    column_name,
    test_status,
    failure_count,
    message
from {{ ref('stg_dbt_test_runs') }}
where {{ modelwatch.in_batch_range('batch_date') }}
