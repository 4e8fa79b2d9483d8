-- A compaction run may also merge small compacted files of earlier runs into its outputs
-- (consolidation). Its input_rows and input_bytes count everything it read; these say how much
-- of that was such files, so that input_rows - consolidated_rows are the run's new rows.
alter table public.processing_metrics
    add column consolidated_files integer,
    add column consolidated_rows bigint;
