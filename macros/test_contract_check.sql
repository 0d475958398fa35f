{#-
  The data contract as dbt tests: fails with one row per failing check of
  `check_name` in the batches being built. Severity comes from the contract var.
-#}
{% test contract_check(model, check_name) %}
    {{ config(severity=var('contract')[check_name]['severity'], store_failures=true) }}
    select batch_date, check_name, column_name, measured_value, lower_bound, upper_bound
    from {{ model }}
    where check_name = '{{ check_name }}'
      and not passed
      and {{ modelwatch.in_batch_range('batch_date') }}
{% endtest %}
