{#-
  raw.<monitor>__rows with each row's target as the batch file's where it had one, else
  the label `modelwatch labels` stored for its id (raw.<monitor>__labels, kept apart so a
  re-run of the batch keeps it). A derived target is computed, never labelled: the rows as
  they are. A subquery, so the batch range's filter on batch_date reaches the rows' index.
-#}
{% macro labelled_rows_relation(m) -%}
    {%- set derived = m.get('derived') or {} -%}
    {%- if m.target in derived -%}
        {{ return(modelwatch.rows_relation(m)) }}
    {%- endif -%}
    {%- set stored = modelwatch.stored_column_names(m) | reject('in', derived.keys() | list) | list -%}
    {%- set labels = api.Relation.create(database=target.database, schema='raw', identifier=m.name ~ '__labels') -%}
    {%- set sql -%}
    (select stored_rows.batch_date
        {%- for column in stored %},
        {% if column == m.target -%}
        coalesce(stored_rows.{{ column }}, labels.{{ column }}) as {{ column }}
        {%- else -%}
        stored_rows.{{ column }}
        {%- endif -%}
        {%- endfor %}
    from {{ modelwatch.rows_relation(m) }} as stored_rows
    left join {{ labels }} as labels on labels.{{ m.id }} = stored_rows.{{ m.id }}) as labelled_rows
    {%- endset -%}
    {{ return(sql) }}
{%- endmacro %}
