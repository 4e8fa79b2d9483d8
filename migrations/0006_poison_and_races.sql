-- No fragment can wedge its dataset, and no racing upload can delete another's object.

-- A fragment that was part of a run that kept failing (a crash, a deterministic error) is
-- *isolated*: later runs take it alone, so that one bad fragment fails only its own run, and is
-- quarantined whole after that run fails too (fusou_core::compaction).
ALTER TABLE battle_files ADD COLUMN isolated INTEGER NOT NULL DEFAULT 0 CHECK (isolated IN (0, 1));

-- How many invocations of a run began reading its fragments without finishing: counted before
-- the first byte is read, so that an invocation that dies (out of memory, out of CPU, a trap)
-- is counted too. An invocation that fails cleanly on I/O takes its count back.
CREATE TABLE compaction_runs (
    run_id      TEXT PRIMARY KEY,
    dataset_id  TEXT NOT NULL,
    invocations INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Storage keys whose upload was refused by the index and whose object is being deleted. A
-- tombstone is written only while no fragment row holds the key, and no row can be written
-- for a key that has one (index::INSERT_FRAGMENT): of two requests racing with one upload
-- URL, the one refused never deletes the object the other has recorded.
CREATE TABLE discarded_uploads (
    key          TEXT PRIMARY KEY,
    discarded_at TEXT NOT NULL
);
CREATE INDEX discarded_uploads_by_age ON discarded_uploads (discarded_at);
