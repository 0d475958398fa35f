{#-
  A pre-hook for the models that count or sort a batch's rows: work_mem
  (vars.build_work_mem) for this model's transaction only (SET LOCAL), so
  their hash tables and sorts stay in memory and no other session changes.
-#}
{% macro build_work_mem() -%}
    {%- set value = var('build_work_mem') | string -%}
    {%- if not modules.re.match('^[0-9]+ ?(kB|MB|GB)$', value) -%}
        {{ exceptions.raise_compiler_error("vars.build_work_mem must be a size such as 128MB, got " ~ value) }}
    {%- endif -%}
    set local work_mem = '{{ value }}'
{%- endmacro %}
