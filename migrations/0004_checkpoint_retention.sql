-- The clean-up forgets the checkpoints of runs whose last step is older than the retention
-- (fusou_core::cleanup): found by time, and their dataset by their outputs.
CREATE INDEX workflow_steps_by_time ON workflow_steps (completed_at);
CREATE INDEX compacted_files_by_run ON compacted_files (run_id);
-- Whether a run holds a lease, asked by the clean-up once per finished run.
CREATE INDEX datasets_by_lease_run ON datasets (lease_run_id);
