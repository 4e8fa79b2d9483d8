-- The shared tables are governed by the client's contract (crates/core/data/port_tables.json):
-- a compacted file whose columns the contract does not name enters its table without them,
-- and says so here (the dataset's status route shows it). Files of tables outside the
-- contract are refused whole (`lake_refused`, from 0007).
ALTER TABLE compacted_files ADD COLUMN lake_note TEXT;
