-- Period roll-ups (fusou_lake::rollup): a table's files of one period, across datasets,
-- rewritten into a few large files that the table lists in their place (the per-dataset files
-- stay, for their owners). A file covered by a roll-up names it here; a roll-up leaves the
-- table when a newer one supersedes it, or when a file it covers is retired (the table then
-- lists its other files on their own again, until the next roll-up).
ALTER TABLE compacted_files ADD COLUMN lake_rollup TEXT;
CREATE INDEX compacted_files_by_rollup ON compacted_files (lake_rollup) WHERE lake_rollup IS NOT NULL;
-- What a roll-up job takes: a table's files of a period that the table lists.
CREATE INDEX compacted_files_listed ON compacted_files (table_name, period_tag)
    WHERE lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NULL;

-- One roll-up job's outputs, recorded when they are written; the committer lists them (or
-- refuses them, when a file they cover changed meanwhile) in the table's next snapshot.
CREATE TABLE lake_rollups (
    id               TEXT PRIMARY KEY,
    table_name       TEXT NOT NULL,
    period_tag       TEXT NOT NULL,
    -- JSON: [{"key", "rows", "size", "columns"}], its output files.
    files            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    -- The snapshot that listed it; the sequence number of the one that removed it.
    lake_snapshot    INTEGER,
    lake_removed_seq INTEGER,
    lake_refused     TEXT
);
CREATE INDEX lake_rollups_pending ON lake_rollups (table_name, created_at)
    WHERE lake_snapshot IS NULL AND lake_refused IS NULL;

-- The compacted files whose rows a roll-up holds.
CREATE TABLE lake_rollup_members (
    rollup_id TEXT NOT NULL,
    file_key  TEXT NOT NULL,
    PRIMARY KEY (rollup_id, file_key)
);
