{#-
  The trip columns of raw.trips and raw.reference_trips, renamed and cast the
  same way for both (stg_trips, stg_reference_trips), so the reference and the
  batches are compared like for like.
-#}
{% macro trip_columns() %}
        -- ids
        cast(vendor_id as integer) as vendor_id,
        cast(ratecode_id as integer) as ratecode_id,
        cast(pu_location_id as integer) as pu_location_id,
        cast(do_location_id as integer) as do_location_id,
        cast(payment_type as integer) as payment_type,
        cast(trip_type as integer) as trip_type,

        -- timestamps
        pickup_datetime,
        dropoff_datetime,
        {{ modelwatch.minutes_between('pickup_datetime', 'dropoff_datetime') }} as duration_min,

        -- trip
        passenger_count,
        trip_distance,
        store_and_fwd_flag,

        -- amounts (USD)
        fare_amount,
        extra,
        mta_tax,
        tip_amount,
        tolls_amount,
        ehail_fee,
        improvement_surcharge,
        congestion_surcharge,
        total_amount
{% endmacro %}
