-- A queue batch's runs read side by side. An invocation that dies while runs read beside each
-- other may have died of a batch-mate's bytes, so it is counted apart and never isolates a
-- run's fragments (only invocations that read alone count towards isolation).
ALTER TABLE compaction_runs ADD COLUMN shared_invocations INTEGER NOT NULL DEFAULT 0;
