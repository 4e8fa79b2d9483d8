-- What a dataset's owner can see of the pipeline: their datasets and every compaction run.
-- The services write with the service key (role service_role, which bypasses RLS); signed-in
-- users read only their own rows; anonymous callers read and write nothing.

create type public.metric_status as enum
    ('pending', 'queued', 'running', 'success', 'failure', 'dlq_failure');

create type public.compaction_priority as enum ('realtime', 'manual', 'scheduled');

create table public.datasets (
    id                     text primary key
                           check (id ~ '^[A-Za-z0-9_-]{1,128}$'),
    owner_id               uuid not null references auth.users (id) on delete cascade,
    compaction_needed      boolean not null default false,
    compaction_in_progress boolean not null default false,
    file_count             bigint not null default 0,
    total_bytes            bigint not null default 0,
    compacted_file_count   bigint not null default 0,
    compacted_bytes        bigint not null default 0,
    last_compacted_at      timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);
create index datasets_owner on public.datasets (owner_id);

create table public.processing_metrics (
    id                uuid primary key default gen_random_uuid(),
    dataset_id        text not null references public.datasets (id) on delete cascade,
    status            public.metric_status not null default 'pending',
    priority          public.compaction_priority not null,
    table_name        text,
    period_tag        text,
    run_id            text,
    queued_at         timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    -- {"validate-dataset": 12, "list-fragments": 30, ...} in milliseconds.
    step_durations_ms jsonb not null default '{}'::jsonb,
    input_bytes       bigint,
    output_bytes      bigint,
    input_rows        bigint,
    output_rows       bigint,
    input_fragments   integer,
    output_files      integer,
    compression_ratio double precision,
    error_step        text,
    error_message     text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create index processing_metrics_dataset on public.processing_metrics (dataset_id, created_at desc);

create function public.touch_updated_at() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create trigger datasets_touch before update on public.datasets
    for each row execute function public.touch_updated_at();
create trigger processing_metrics_touch before update on public.processing_metrics
    for each row execute function public.touch_updated_at();

alter table public.datasets enable row level security;
alter table public.processing_metrics enable row level security;

-- Supabase grants table privileges to anon and authenticated by default; RLS alone would then
-- stand between them and the data. Take the privileges away too, so that a missing policy can
-- never open a table.
revoke all on public.datasets, public.processing_metrics from anon, authenticated;
grant select on public.datasets, public.processing_metrics to authenticated;
grant all on public.datasets, public.processing_metrics to service_role;

create policy "owners read their datasets" on public.datasets
    for select to authenticated
    using (owner_id = (select auth.uid()));

create policy "owners read the metrics of their datasets" on public.processing_metrics
    for select to authenticated
    using (exists (
        select 1 from public.datasets d
        where d.id = processing_metrics.dataset_id and d.owner_id = (select auth.uid())
    ));
