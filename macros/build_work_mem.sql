{#-
  A pre-hook for the models that count or sort a batch's rows: work_mem
  (vars.build_work_mem) for this model's transaction only (SET LOCAL), so
  their hash tables and sorts stay in memory and no other session changes;
  and the engine's other settings for such queries (build_settings).
-#}
{% macro build_work_mem() -%}
    {%- set value = var('build_work_mem') | string -%}
    {%- if not modules.re.match('^[0-9]+ ?(kB|MB|GB)$', value) -%}
        {{ exceptions.raise_compiler_error("vars.build_work_mem must be a size such as 128MB, got " ~ value) }}
    {%- endif -%}
    set local work_mem = '{{ value }}'{{ modelwatch.build_settings() }}
{%- endmacro %}

{#- Further SET LOCAL statements for a build's queries, after a `;` (none by default). -#}
{% macro build_settings() -%}
    {{ return(adapter.dispatch('build_settings', 'modelwatch')()) }}
{%- endmacro %}

{% macro default__build_settings() -%}
{%- endmacro %}

{#-
  No JIT compilation: PostgreSQL compiles a query's expressions once its cost
  estimate passes jit_above_cost, and these queries hold one expression per
  column and check (thousands for a wide monitor), whose compilation takes far
  longer than running them on a batch (docs/performance.md).
-#}
{% macro postgres__build_settings() -%}
    ; set local jit = off
{%- endmacro %}

{#-
  A pre-hook for models that join small tables of bins and counts through CTEs:
  PostgreSQL has no statistics for a CTE, guesses one row, and plans nested
  loops that compare every bin with every count (feature_drift on a wide
  monitor: 2.4 s, against 0.05 s hashed; docs/performance.md).
-#}
{% macro without_nested_loops() -%}
    {{ return(adapter.dispatch('without_nested_loops', 'modelwatch')()) }}
{%- endmacro %}

{% macro default__without_nested_loops() -%}
{%- endmacro %}

{% macro postgres__without_nested_loops() -%}
    set local enable_nestloop = off
{%- endmacro %}
