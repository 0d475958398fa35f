with source as (
    select * from {{ source('raw', 'batches') }}
),

renamed as (
    select
        batch_date,
        file_name,
        file_sha256,
        rows_in_file,
        rows_loaded,
        rows_outside_day,
        model_version,
        status as load_status,
        started_at,
        finished_at,
        error
    from source
)

select * from renamed
