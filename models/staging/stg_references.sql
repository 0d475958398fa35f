with source as (
    select * from {{ source('raw', 'references') }}
),

renamed as (
    select
        monitor,
        version as reference_version,
        file_name,
        file_sha256,
        row_count,
        model_version,
        created_at
    from source
)

select * from renamed
