with source as (
    select * from {{ source('raw', 'drift_datasets') }}
),

renamed as (
    select
        -- keys
        monitor,
        batch_date,
        reference_version,

        -- rows compared (Evidently sees a seeded sample above evidently_max_rows)
        reference_rows,
        reference_rows_used,
        current_rows,
        current_rows_used,
        sample_seed,

        -- Evidently's DriftedColumnsCount
        columns_monitored,
        columns_computed,
        columns_drifted,
        share_drifted,
        drift_share as dataset_drift_share,
        dataset_drift as is_dataset_drift,

        -- provenance
        evidently_version,
        seconds as evidently_seconds,
        computed_at

    from source
)

select * from renamed
