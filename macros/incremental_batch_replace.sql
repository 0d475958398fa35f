{#-
  incremental_strategy='batch_replace': delete every row of the monitor's
  batches being built, then insert the new ones. Unlike delete+insert on a unique key, a batch
  that no longer produces rows (it failed the gate on a re-run) leaves none
  behind: re-running a batch never leaves a stale mart row.
-#}
{% macro get_incremental_batch_replace_sql(arg_dict) %}
    {%- set target = arg_dict["target_relation"] -%}
    {%- set source = arg_dict["temp_relation"] -%}
    {%- set columns = arg_dict["dest_columns"] | map(attribute="quoted") | join(", ") -%}
    delete from {{ target }} where monitor = '{{ modelwatch.current_monitor() }}' and {{ modelwatch.in_batch_range('batch_date') }};
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }};
{% endmacro %}
