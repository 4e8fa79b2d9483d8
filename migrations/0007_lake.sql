-- Open tables: every battle table is an Apache Iceberg table over the live compacted files of
-- all datasets. The index stays the source of truth; each table is brought to agree with it.

-- A compacted file's columns (JSON: name and Iceberg type), recorded by the run's commit;
-- the snapshot that added it to its table; the sequence number of the snapshot that removed
-- it once it was retired; why its table cannot take it (a type clash), if so.
ALTER TABLE compacted_files ADD COLUMN columns TEXT;
ALTER TABLE compacted_files ADD COLUMN lake_snapshot INTEGER;
ALTER TABLE compacted_files ADD COLUMN lake_removed_seq INTEGER;
ALTER TABLE compacted_files ADD COLUMN lake_refused TEXT;

-- What a table commit takes: live files not in their table, retired files still in it.
CREATE INDEX compacted_files_lake_adds ON compacted_files (table_name, created_at)
    WHERE lake_snapshot IS NULL AND lake_refused IS NULL AND retired_at IS NULL;
CREATE INDEX compacted_files_lake_removes ON compacted_files (table_name)
    WHERE lake_snapshot IS NOT NULL AND lake_removed_seq IS NULL AND retired_at IS NOT NULL;

-- Each table's pointer: its current metadata file (swapped by compare-and-swap), its version,
-- and the lowest sequence number of a snapshot it keeps (what may be deleted follows from it).
CREATE TABLE lake_tables (
    name             TEXT PRIMARY KEY,
    metadata_key     TEXT NOT NULL,
    version          INTEGER NOT NULL,
    oldest_sequence  INTEGER NOT NULL,
    updated_at       TEXT NOT NULL
);

-- Table objects (manifests, manifest lists, metadata files) no snapshot needs once every
-- snapshot the table keeps has a sequence number of at least `free_at_sequence`.
CREATE TABLE lake_garbage (
    key              TEXT PRIMARY KEY,
    table_name       TEXT NOT NULL,
    free_at_sequence INTEGER NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX lake_garbage_by_table ON lake_garbage (table_name, free_at_sequence);
