with source as (
    select * from {{ source('raw', 'dbt_test_runs') }}
),

renamed as (
    select
        monitor,
        invocation_id,
        executed_at,
        batch_date,
        test_name,
        column_name,
        status as test_status,
        failures as failure_count,
        message
    from source
)

select * from renamed
