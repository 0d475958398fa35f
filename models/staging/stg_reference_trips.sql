with source as (
    select * from {{ source('raw', 'reference_trips') }}
),

renamed as (
    select
        -- ids
        model_version,
        trip_id,
        {{- modelwatch.trip_columns() }},

        -- the prediction of the model this reference set belongs to
        predicted_duration_min

    from source
)

select * from renamed
