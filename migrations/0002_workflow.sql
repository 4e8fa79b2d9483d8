-- Checkpoints of the durable step runner (fusou_core::workflow): one row per completed step of a
-- run. A redelivered message derives the same run id, finds its completed steps here and skips
-- them; the first write of a step wins, and every run continues from that stored output.
CREATE TABLE workflow_steps (
    run_id       TEXT NOT NULL,
    step         TEXT NOT NULL,
    output       TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    completed_at TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
