with source as (
    select * from {{ source('raw', 'trips') }}
),

renamed as (
    select
        trip_id,
        batch_date,
        {{- modelwatch.trip_columns() }}

    from source
)

select * from renamed
