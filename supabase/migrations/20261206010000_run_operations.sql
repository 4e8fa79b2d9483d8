-- What a run cost in billable operations, as the compaction Worker counted them: R2 class A
-- (writes, lists) and class B (reads), D1 statements and the rows D1 said they read and wrote,
-- queue operations, and subrequests.
alter table public.processing_metrics
    add column r2_class_a bigint,
    add column r2_class_b bigint,
    add column d1_statements bigint,
    add column d1_rows_read bigint,
    add column d1_rows_written bigint,
    add column queue_operations bigint,
    add column subrequests bigint;
