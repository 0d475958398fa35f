with source as (
    select * from {{ source('raw', 'drift_scores') }}
),

renamed as (
    select
        -- keys
        monitor,
        batch_date,
        column_name,
        column_kind,

        -- Evidently's verdict
        method as drift_method,
        threshold as drift_threshold,
        score as drift_score,
        drifted as is_drifted,

        -- when Evidently could not score the column
        computed as is_computed,
        reason as not_computed_reason,

        -- provenance
        evidently_version,
        computed_at

    from source
)

select * from renamed
