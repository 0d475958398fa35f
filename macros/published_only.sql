{#-
  Row-level security on a mart for the reader role: it sees only the batches
  in published_batches (modelwatch.postgres.publish), so a build killed halfway never
  shows a half-rebuilt batch. The owner (the pipeline, dbt) is not affected.
  A post-hook: it runs in the model's own transaction, so a mart is never
  without the policy, and only changes the table when the policy is missing
  (after a first build or a full refresh) or row-level security was turned off.
  Any role other than the owner and the reader sees no rows of the marts.
  Another target than the pipeline's (a development build) has no published batches: nothing.
-#}
{% macro published_only() -%}
{%- if target.name == 'pipeline' -%}
do $$
begin
    if not exists (
        select 1 from pg_policies
        where schemaname = '{{ this.schema }}' and tablename = '{{ this.identifier }}'
          and policyname = 'published_monitor_batches_only'
    ) then
        create policy published_monitor_batches_only on {{ this }} for select to modelwatch_reader
            using ((monitor, batch_date) in (select monitor, batch_date from {{ this.schema }}.published_batches));
    end if;
    if not (select c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = '{{ this.schema }}' and c.relname = '{{ this.identifier }}') then
        alter table {{ this }} enable row level security;
    end if;
end
$$
{%- endif -%}
{%- endmacro %}
