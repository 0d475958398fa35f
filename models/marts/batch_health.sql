{#- One row per batch: the verdict of its latest build and why. -#}
{{ config(tags=['run_results']) }}

with batches as (
    select * from {{ ref('stg_batches') }}
    where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

{#- Each batch's tests of its latest build: every build of a batch adds its tests' outcomes (a
    wide monitor's hundreds of checks each time), so the latest is found once per batch, not
    once per test run. #}
runs as (
    select *
    from {{ ref('stg_dbt_test_runs') }}
    where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }}
),

latest_tests as (
    select runs.*
    from runs
    inner join (
        select batch_date, max(executed_at) as executed_at from runs group by batch_date
    ) as latest on latest.batch_date = runs.batch_date and latest.executed_at = runs.executed_at
),

test_counts as (
    select
        batch_date,
        count(*) filter (where test_status = 'pass') as tests_passed,
        count(*) filter (where test_status = 'warn') as tests_warned,
        count(*) filter (where test_status in ('fail', 'error')) as tests_failed,
        string_agg(test_name, ', ' order by test_name) filter (where test_status in ('fail', 'error')) as failing_tests,
        max(executed_at) as tested_at
    from latest_tests
    group by batch_date
),

{#- int_batch_rows holds the batches this build covers, with their late labels (macros/labels.sql) -#}
labels as (
    select
        batch_date,
        cast(count({{ modelwatch.monitor().target }}) as {{ dbt.type_float() }}) / nullif(count(*), 0) as label_coverage
    from {{ ref('int_batch_rows') }}
    group by batch_date
)

select
    batches.monitor,
    batches.batch_date,
    batches.batch_end,
    cast(
        case
            when coalesce(test_counts.tests_failed, 0) > 0 then 'failed'
            when coalesce(test_counts.tests_warned, 0) > 0 then 'warned'
            when test_counts.batch_date is null then 'untested'
            else 'passed'
        end as text
    ) as status,
    batches.rows_loaded,
    coalesce(test_counts.tests_passed, 0) as tests_passed,
    coalesce(test_counts.tests_warned, 0) as tests_warned,
    coalesce(test_counts.tests_failed, 0) as tests_failed,
    test_counts.failing_tests,
    batches.model_version,
    batches.reference_version,
    test_counts.tested_at,
    coalesce(labels.label_coverage, 0) as label_coverage
from batches
left join test_counts on test_counts.batch_date = batches.batch_date
left join labels on labels.batch_date = batches.batch_date
