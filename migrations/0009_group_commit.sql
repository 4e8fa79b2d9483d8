-- Group commit: the open tables are committed apart from the runs, at most once per table per
-- LAKE_COMMIT_INTERVAL_SECONDS, by one committer (a Durable Object's alarm).

-- When the table's current snapshot was committed (ms since the epoch; 0: before this column).
ALTER TABLE lake_tables ADD COLUMN committed_ms INTEGER NOT NULL DEFAULT 0;

-- Each value a table's oldest kept sequence number took, from when (ms since the epoch). An
-- object free at sequence number n is deleted only once the table's oldest kept sequence number
-- was at least n a grace period ago: a reader that planned from an expired snapshot just before
-- it expired still finds its files.
CREATE TABLE lake_expiries (
    table_name      TEXT NOT NULL,
    oldest_sequence INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (table_name, oldest_sequence)
);

-- A snapshot takes whole runs: a run's retired files are found by the run that retired them.
CREATE INDEX compacted_files_lake_removes_by_run ON compacted_files (table_name, retired_run_id)
    WHERE lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NOT NULL;
