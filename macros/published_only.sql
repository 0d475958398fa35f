{#-
  Row-level security on a mart for the reader role: it sees only the batches
  in published_batches (modelwatch.publish), so a build killed halfway never
  shows a half-rebuilt batch. The owner (the pipeline, dbt) is not affected.
  A post-hook: it runs in the model's own transaction, so a mart is never
  without the policy, and only changes the table when the policy is missing
  (after a first build or a full refresh).
-#}
{% macro published_only() -%}
do $$
begin
    if not exists (
        select 1 from pg_policies
        where schemaname = '{{ this.schema }}' and tablename = '{{ this.identifier }}'
          and policyname = 'published_batches_only'
    ) then
        alter table {{ this }} enable row level security;
        create policy published_batches_only on {{ this }} for select to modelwatch_reader
            using (batch_date in (select batch_date from {{ this.schema }}.published_batches));
    end if;
end
$$
{%- endmacro %}
