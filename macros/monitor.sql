{#-
  The monitor a build is for (var('monitor')), declared under vars.monitors and
  merged over vars.monitor_defaults key by key, as modelwatch.monitors does in
  Python; and the lists of its columns by role. Every generic model reads the
  declaration through these, never the vars themselves.
-#}
{% macro monitor(name=none) -%}
    {%- set name = name or modelwatch.current_monitor() -%}
    {%- set declared = var('monitors', {}).get(name) -%}
    {%- if declared is none -%}
        {{ exceptions.raise_compiler_error("unknown monitor '" ~ name ~ "': declare it under vars.monitors") }}
    {%- endif -%}
    {%- set merged = modelwatch.deep_merge(var('monitor_defaults', {}), declared) -%}
    {%- do merged.update({'name': name}) -%}
    {{ return(merged) }}
{%- endmacro %}

{#-
  The monitor being built: var('monitor'), which modelwatch sets for every build; else the
  project's default monitor; else (none set, as Python's modelwatch.monitors has it) the first
  one declared.
-#}
{% macro current_monitor() -%}
    {%- set name = var('monitor', none) or var('default_monitor', none) -%}
    {%- if name is none -%}
        {%- set name = ((var('monitors', {}) or {}).keys() | list or [none]) | first -%}
    {%- endif -%}
    {%- if name is none -%}
        {{ exceptions.raise_compiler_error("no monitor: declare one under vars.monitors (and vars.default_monitor)") }}
    {%- endif -%}
    {%- if name not in var('monitors', {}) -%}
        {{ exceptions.raise_compiler_error("unknown monitor '" ~ name ~ "': declare it under vars.monitors") }}
    {%- endif -%}
    {{ return(name) }}
{%- endmacro %}

{% macro deep_merge(base, override) -%}
    {%- set merged = {} -%}
    {%- do merged.update(base) -%}
    {%- for key, value in override.items() -%}
        {%- if value is mapping and merged.get(key) is mapping -%}
            {%- do merged.update({key: modelwatch.deep_merge(merged[key], value)}) -%}
        {%- else -%}
            {%- do merged.update({key: value}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(merged) }}
{%- endmacro %}

{% macro is_classifier(m) -%}
    {{ return(m.task != 'regression') }}
{%- endmacro %}

{#- A binary classifier's probability column, or a multiclass one's {class: column}. -#}
{% macro probability_columns(m) -%}
    {%- if m.task == 'binary_classification' -%}
        {{ return([m.probability]) }}
    {%- elif m.task == 'multiclass_classification' -%}
        {{ return(m.probability.values() | list) }}
    {%- endif -%}
    {{ return([]) }}
{%- endmacro %}

{% macro unique_list(names) -%}
    {%- set seen = [] -%}
    {%- for name in names if name not in seen -%}{%- do seen.append(name) -%}{%- endfor -%}
    {{ return(seen) }}
{%- endmacro %}

{#- Profiled as numbers: numeric features, probabilities, a regression's prediction and target. -#}
{% macro numeric_columns(m) -%}
    {%- set features = m.features.get('numeric') or [] -%}
    {%- set outputs = [] if modelwatch.is_classifier(m) else [m.prediction, m.target] -%}
    {{ return(modelwatch.unique_list(features + outputs + modelwatch.probability_columns(m))) }}
{%- endmacro %}

{#- Profiled as categories: categorical features and a classifier's labels. -#}
{% macro categorical_columns(m) -%}
    {%- set features = m.features.get('categorical') or [] -%}
    {%- set outputs = [m.prediction, m.target] if modelwatch.is_classifier(m) else [] -%}
    {{ return(modelwatch.unique_list(features + outputs)) }}
{%- endmacro %}

{#- Scored for drift (the target is performance, not drift), by how they are binned. -#}
{% macro drift_numeric_columns(m=none) -%}
    {%- set m = m or modelwatch.monitor() -%}
    {%- set outputs = [] if modelwatch.is_classifier(m) else [m.prediction] -%}
    {{ return((m.features.get('numeric') or []) + outputs + modelwatch.probability_columns(m)) }}
{%- endmacro %}

{% macro drift_categorical_columns(m=none) -%}
    {%- set m = m or modelwatch.monitor() -%}
    {%- set outputs = [m.prediction] if modelwatch.is_classifier(m) else [] -%}
    {{ return((m.features.get('categorical') or []) + outputs) }}
{%- endmacro %}

{% macro feature_columns(m) -%}
    {{ return((m.features.get('numeric') or []) + (m.features.get('categorical') or [])) }}
{%- endmacro %}

{#- raw.<monitor>__rows and raw.<monitor>__reference (modelwatch.postgres.schema creates them). -#}
{% macro rows_relation(m) -%}
    {{ return(api.Relation.create(database=target.database, schema='raw', identifier=m.name ~ '__rows')) }}
{%- endmacro %}

{% macro reference_relation(m) -%}
    {{ return(api.Relation.create(database=target.database, schema='raw', identifier=m.name ~ '__reference')) }}
{%- endmacro %}

{#-
  A monitor's rows as the models read them, from `relation` (its rows or its
  reference table): the stored columns and the derived ones (SQL over the stored
  ones), `columns` only when given. `key`: batch_date or reference_version.
-#}
{% macro monitor_rows(m, relation, key, where, columns=none) -%}
    {%- set derived = m.get('derived') or {} -%}
    select
        cast('{{ m.name }}' as {{ dbt.type_string() }}) as monitor,
        {{ key }}
        {%- for column in (columns if columns is not none else modelwatch.stored_column_names(m)) %}
        {%- if column in derived %},
        ({{ derived[column] }}) as {{ column }}
        {%- elif column != key %},
        {{ column }}
        {%- endif %}
        {%- endfor %}
    from {{ relation }}
    where {{ where }}
{%- endmacro %}

{#- The declared columns, derived ones included: id, timestamp, features, outputs, further columns. -#}
{% macro stored_column_names(m) -%}
    {{ return(modelwatch.unique_list(
        [m.id, m.timestamp] + modelwatch.feature_columns(m) + [m.prediction]
        + modelwatch.probability_columns(m) + [m.target]
        + ((m.get('columns') or {}).keys() | list) + ((m.get('derived') or {}).keys() | list))) }}
{%- endmacro %}

{#- The columns a SQL condition names, among the monitor's. -#}
{% macro columns_named_in(m, condition) -%}
    {%- set names = modules.re.findall('[a-z_][a-z0-9_]*', condition or '') -%}
    {{ return(modelwatch.stored_column_names(m) | select('in', names) | list) }}
{%- endmacro %}

{#-
  For a monitor's own mart (models/monitors/<name>/), built by every build: no rows
  unless the build is for its monitor. The columns are the model's contract's, so the
  mart's shape holds whichever monitor is built.
-#}
{% macro no_rows_unless_monitor(name) -%}
    {%- if modelwatch.current_monitor() == name -%}{{ return(false) }}{%- endif -%}
    {{ return(true) }}
{%- endmacro %}

{% macro no_rows_of_this_model() -%}
    select
    {%- for column in model.columns.values() %}
        cast(null as {{ column.data_type }}) as {{ column.name }}{{ ',' if not loop.last }}
    {%- endfor %}
    where false
{%- endmacro %}

{#-
  The two CTEs an incremental reference model starts from: `versions`, the
  reference versions of `rows` (int_reference_rows) that `this` has no rows for
  where `done` holds, and `reference`, their rows.
-#}
{% macro reference_versions_to_do(rows, done) -%}
versions as (
    select distinct reference_version
    from {{ rows }}
    {%- if is_incremental() %}
    where reference_version not in (select reference_version from {{ this }} where {{ done }})
    {%- endif %}
),

{#- Not materialized: each model reads it in a few scans, and a copy of a wide reference set
    would spill to disk before the first. #}
reference as not materialized (
    select reference_rows.*
    from {{ rows }} as reference_rows
    inner join versions on versions.reference_version = reference_rows.reference_version
)
{%- endmacro %}

{#- How long a monitor may go without a new batch before its silence is an alert
    (modelwatch.monitors: two of its batch periods unless declared). -#}
{% macro stale_after(m) -%}
    {{ return(m.get('stale_after') or ('2 ' ~ m.batch_period ~ 's')) }}
{%- endmacro %}
