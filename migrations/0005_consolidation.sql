-- Consolidation (fusou_core::compaction::consolidate): small compacted files are merged into
-- larger ones by later runs. A merged file is *retired* by the commit that records its
-- replacement (fenced like a consumed fragment); every reader of the index sees live files
-- only, and the clean-up deletes a retired file's object and row after the retention.
ALTER TABLE compacted_files ADD COLUMN retired_at TEXT;
ALTER TABLE compacted_files ADD COLUMN retired_run_id TEXT;
-- A run lists its dataset's small live files.
CREATE INDEX compacted_files_live_by_size ON compacted_files (dataset_id, size) WHERE retired_at IS NULL;
-- The clean-up finds retired files by age.
CREATE INDEX compacted_files_retired ON compacted_files (retired_at) WHERE retired_at IS NOT NULL;
