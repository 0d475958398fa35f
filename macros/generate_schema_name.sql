{#-
  dbt's convention, with the pipeline's schemas kept by name: the `pipeline` target
  (modelwatch's builds) writes to raw / staging / marts / audit exactly; any other
  target writes to <target schema>_<custom schema> (dev_staging, dev_marts, ...), so a
  development build never touches what the pipeline and Grafana read.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- elif target.name == 'pipeline' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema | trim }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
