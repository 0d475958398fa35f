{#-
  The data contract as dbt tests: one test per severity, failing (or warning)
  with one row per failing check of that severity in the monitor's batches being
  built. modelwatch records each check's outcome per batch as its own test run
  (contract_<check_name>) from these rows and batch_checks.
-#}
{% test contract_check(model, check_severity) %}
    {{ config(severity=check_severity, store_failures=true) }}
    select monitor, batch_date, check_name, column_name, measured_value, lower_bound, upper_bound
    from {{ model }}
    where severity = '{{ check_severity }}'
      and not passed
      and monitor = '{{ modelwatch.current_monitor() }}'
      and {{ modelwatch.in_batch_range('batch_date') }}
{% endtest %}
