-- What the clean-up (fusou_core::cleanup, the compaction Worker's cron) needs to find its work,
-- and where unreadable segments are recorded.

-- When a compacted fragment's R2 object was deleted (after the retention). The row stays: it
-- keeps the content hash that answers a repeated upload with 409.
ALTER TABLE battle_files ADD COLUMN purged_at TEXT;

-- Every output key a run is about to write, recorded before its first byte (and its multipart
-- upload id, once begun). The run's commit removes them; one left behind belongs to a run that
-- never committed: an orphan, deleted (and its upload aborted) by the clean-up.
CREATE TABLE staged_outputs (
    key        TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    upload_id  TEXT,
    -- Unix milliseconds.
    staged_at  INTEGER NOT NULL
);
CREATE INDEX staged_outputs_by_age ON staged_outputs (staged_at);

-- Runs whose orphan outputs the clean-up deleted. Such a run may never take a lease again
-- (index::ACQUIRE_LEASE), so it can never commit the keys that are gone.
CREATE TABLE reaped_runs (
    run_id     TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    reaped_at  TEXT NOT NULL
);

-- Segments a run could not read. Their fragments are kept past the retention, for inspection.
CREATE TABLE quarantined_segments (
    fragment_key TEXT NOT NULL,
    table_name   TEXT NOT NULL,
    dataset_id   TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    error        TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (fragment_key, table_name)
);
