with source as (
    select * from {{ source('raw', 'batches') }}
),

renamed as (
    select
        -- keys
        monitor,
        batch_date,
        batch_end,

        -- what was loaded
        file_name,
        file_sha256,
        rows_in_file,
        rows_loaded,
        rows_outside_period,
        model_version,
        reference_version,

        -- the latest attempt
        status as load_status,
        started_at,
        finished_at,
        error
    from source
)

select * from renamed
