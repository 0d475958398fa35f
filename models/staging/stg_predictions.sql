with source as (
    select * from {{ source('raw', 'predictions') }}
),

renamed as (
    select
        trip_id,
        batch_date,
        model_version,
        predicted_duration_min
    from source
)

select * from renamed
