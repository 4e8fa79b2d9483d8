-- The battle-data index in D1: what was uploaded, what is owed compaction, what it produced.
-- Times are ISO-8601 UTC text; lease expiry is Unix milliseconds so that it compares as a number.

-- A dataset belongs to the user who first uploaded to it.
CREATE TABLE datasets (
    id                TEXT PRIMARY KEY,
    owner_id          TEXT NOT NULL,
    -- 1 while fragments wait for compaction; set by uploads, cleared by the run that consumed them.
    compaction_needed INTEGER NOT NULL DEFAULT 0 CHECK (compaction_needed IN (0, 1)),
    -- The compaction lease: held by one run until it expires. `lease_epoch` grows with every
    -- grant, so a run that lost its lease cannot commit (its writes are fenced by the epoch).
    lease_run_id      TEXT,
    lease_expires_at  INTEGER,
    lease_epoch       INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    last_compacted_at TEXT
);
CREATE INDEX datasets_needing_compaction ON datasets (id) WHERE compaction_needed = 1;

-- One row per uploaded fragment (an R2 object made of standalone Parquet segments).
CREATE TABLE battle_files (
    key              TEXT PRIMARY KEY,
    dataset_id       TEXT NOT NULL REFERENCES datasets (id),
    table_name       TEXT NOT NULL,
    period_tag       TEXT NOT NULL,
    content_hash     TEXT NOT NULL,
    size             INTEGER NOT NULL CHECK (size > 0),
    -- JSON array of {table_name, start_byte, byte_length, format[, num_rows]}.
    table_offsets    TEXT NOT NULL,
    uploaded_by      TEXT NOT NULL,
    uploaded_at      TEXT NOT NULL,
    -- Set, together with the run that consumed it, in the same batch that records the outputs.
    compacted_at     TEXT,
    compacted_run_id TEXT,
    -- The same bytes are stored once per dataset: a repeat upload is answered 409.
    UNIQUE (dataset_id, content_hash)
);
CREATE INDEX battle_files_pending ON battle_files (dataset_id, uploaded_at) WHERE compacted_at IS NULL;
CREATE INDEX battle_files_compacted ON battle_files (compacted_at) WHERE compacted_at IS NOT NULL;

-- One row per compacted Parquet file written to R2.
CREATE TABLE compacted_files (
    key                TEXT PRIMARY KEY,
    dataset_id         TEXT NOT NULL REFERENCES datasets (id),
    period_tag         TEXT NOT NULL,
    table_name         TEXT NOT NULL,
    run_id             TEXT NOT NULL,
    schema_fingerprint TEXT NOT NULL,
    row_count          INTEGER NOT NULL,
    size               INTEGER NOT NULL,
    source_segments    INTEGER NOT NULL,
    created_at         TEXT NOT NULL
);
CREATE INDEX compacted_files_by_dataset ON compacted_files (dataset_id, period_tag, table_name);
