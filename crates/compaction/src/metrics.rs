//! A run's `processing_metrics` row, as a type: what the compaction Worker writes to Supabase
//! for every message, built from the run's outcome. The figures have one name each, the same in
//! the row, in the Worker's log line and here. Once written, these names are a contract with the
//! owners who read them (`supabase/migrations/`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{Outcome, RunError, SkipReason, Step, Summary};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::message::{CompactionMessage, Priority};
use fusou_core::supabase::MetricStatus;

/// The columns of a run's row that a Worker sets; `None` leaves a column as it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsUpdate {
    pub status: MetricStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds per step kind this invocation ran (merge steps summed as `merge`), and
    /// `total`, the whole invocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_durations_ms: Option<BTreeMap<String, u64>>,
    /// Fragments the run consumed (read, or set aside unread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_fragments: Option<u64>,
    /// Bytes and rows of every readable segment read (consolidated files included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_rows: Option<u64>,
    /// Compacted files written, their bytes and their rows (`input_rows` less the rows of
    /// segments the merge had to leave out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_rows: Option<u64>,
    /// Small compacted files merged again, and their rows (part of `input_rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consolidated_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consolidated_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_step: Option<String>,
    /// Why a run failed, was skipped, or what it set aside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The limit a failed run's last attempt waited for, when it failed by a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_timed_out_ms: Option<u64>,
    /// The run's own execution in the Worker, without its waits on I/O (a local figure: on
    /// Cloudflare the clock stands still while code runs, so it is about 0 there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_busy_ms: Option<u64>,
    /// The Worker's Wasm memory after the run: the isolate's peak so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_memory_bytes: Option<u64>,
    /// The run's billable operations (R2 classes, D1 statements and rows, subrequests).
    #[serde(flatten)]
    pub operations: Option<fusou_ports::meter::Operations>,
}

impl MetricsUpdate {
    fn status(status: MetricStatus) -> Self {
        Self {
            status,
            run_id: None,
            started_at: None,
            finished_at: None,
            step_durations_ms: None,
            input_fragments: None,
            input_bytes: None,
            input_rows: None,
            output_files: None,
            output_bytes: None,
            output_rows: None,
            consolidated_files: None,
            consolidated_rows: None,
            compression_ratio: None,
            error_step: None,
            error_message: None,
            error_timed_out_ms: None,
            worker_busy_ms: None,
            wasm_memory_bytes: None,
            operations: None,
        }
    }

    /// A run has begun.
    pub fn running(run_id: &str, started_at: DateTime<Utc>) -> Self {
        Self { run_id: Some(run_id.to_owned()), started_at: Some(started_at), ..Self::status(MetricStatus::Running) }
    }

    /// A run has ended as `outcome`, after `total_ms` of its invocation.
    pub fn finished(outcome: &Result<Outcome, RunError>, finished_at: DateTime<Utc>, total_ms: u64) -> Self {
        let ended = |status, step: Option<Step>, message: String| Self {
            finished_at: Some(finished_at),
            error_step: step.map(|s| s.name()),
            error_message: Some(message),
            ..Self::status(status)
        };
        match outcome {
            Ok(Outcome::Committed(summary)) => Self::committed(summary, finished_at, total_ms),
            Ok(Outcome::Skipped(reason)) => ended(MetricStatus::Skipped, None, reason.to_string()),
            Ok(Outcome::LostLease { .. }) => {
                ended(MetricStatus::Failure, Some(Step::UpdateMetadata), "the run lost its lease; outputs orphaned".into())
            }
            Ok(Outcome::Superseded { .. }) => ended(
                MetricStatus::Failure,
                Some(Step::UpdateMetadata),
                "another run had compacted this run's inputs meanwhile; nothing committed, outputs orphaned".into(),
            ),
            Ok(Outcome::Isolated { fragments }) => ended(
                MetricStatus::Failure,
                Some(Step::ReadFragments),
                format!(
                    "invocations of this run kept dying or failing while reading; its {fragments} fragments will be compacted one at a time"
                ),
            ),
            Err(e) => Self {
                error_step: Some(e.0.step().to_owned()),
                error_timed_out_ms: e.0.timed_out_ms(),
                ..ended(MetricStatus::Failure, None, e.to_string())
            },
        }
    }

    fn committed(s: &Summary, finished_at: DateTime<Utc>, total_ms: u64) -> Self {
        let mut steps = s.step_ms.clone();
        steps.insert("total".into(), total_ms);
        let quarantined = (!s.quarantined.is_empty()).then(|| {
            let each: Vec<String> = s.quarantined.iter().map(|q| format!("{} {}: {}", q.fragment_key, q.table, q.error)).collect();
            format!("quarantined {} segment(s): {}", each.len(), each.join("; "))
        });
        Self {
            finished_at: Some(finished_at),
            step_durations_ms: Some(steps),
            input_fragments: Some(s.input_fragments),
            input_bytes: Some(s.input_bytes),
            input_rows: Some(s.input_rows),
            output_files: Some(s.outputs.len() as u64),
            output_bytes: Some(s.output_bytes),
            output_rows: Some(s.output_rows),
            consolidated_files: Some(s.consolidated_files),
            consolidated_rows: Some(s.consolidated_rows),
            compression_ratio: Some(if s.output_bytes > 0 { s.input_bytes as f64 / s.output_bytes as f64 } else { 0.0 }),
            error_message: quarantined,
            ..Self::status(MetricStatus::Success)
        }
    }

    /// A message ran out of retries.
    pub fn dead_lettered(finished_at: DateTime<Utc>) -> Self {
        Self {
            finished_at: Some(finished_at),
            error_message: Some("dead-lettered after its retries".into()),
            ..Self::status(MetricStatus::DlqFailure)
        }
    }

    /// A queue message that is no compaction message.
    pub fn invalid(error: &str, finished_at: DateTime<Utc>) -> Self {
        Self {
            finished_at: Some(finished_at),
            error_step: Some("decode-message".into()),
            error_message: Some(error.to_owned()),
            ..Self::status(MetricStatus::Failure)
        }
    }
}

/// A whole row as upserted: its identity (from the message), then the update.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRow<'a> {
    pub id: Uuid,
    pub dataset_id: &'a DatasetId,
    pub priority: Priority,
    pub table_name: Option<&'a TableName>,
    pub period_tag: Option<&'a PeriodTag>,
    #[serde(flatten)]
    pub update: &'a MetricsUpdate,
}

impl<'a> MetricsRow<'a> {
    pub fn new(message: &'a CompactionMessage, id: Uuid, update: &'a MetricsUpdate) -> Self {
        Self {
            id,
            dataset_id: &message.dataset_id,
            priority: message.priority,
            table_name: message.table.as_ref(),
            period_tag: message.period_tag.as_ref(),
            update,
        }
    }
}

/// Why a run did nothing.
impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::LeaseHeld { by } => {
                write!(f, "coalesced: run {by} holds the dataset; it takes this request's fragments, or asks for a run that will")
            }
            SkipReason::NothingPending => write!(f, "coalesced: nothing was pending; an earlier run took this request's fragments"),
            SkipReason::Forgotten => write!(f, "this run had finished and been forgotten by the clean-up; nothing was redone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::run_commit::OutputRecord;
    use fusou_contract::fragment::Quarantined;
    use fusou_core::workflow::StepError;

    fn at() -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn summary() -> Summary {
        let output = |key: &str, rows, bytes| OutputRecord {
            key: key.into(),
            period: PeriodTag::parse("2025-11-05").unwrap(),
            table: TableName::parse("battle").unwrap(),
            schema_fingerprint: "fp".into(),
            rows,
            bytes,
            source_segments: 1,
            columns: String::new(),
        };
        Summary {
            input_fragments: 3,
            input_bytes: 3000,
            input_rows: 30,
            outputs: vec![output("a", 20, 1000), output("b", 8, 500)],
            output_bytes: 1500,
            output_rows: 28,
            quarantined: vec![Quarantined { fragment_key: "f".into(), table: "cells".into(), error: "bad page".into() }],
            consolidated_files: 1,
            consolidated_rows: 5,
            continue_after: false,
            step_ms: BTreeMap::from([("merge".into(), 40), ("read-fragments".into(), 10)]),
            tables: Vec::new(),
        }
    }

    #[test]
    fn a_committed_run_writes_each_figure_once_under_its_column() {
        let row = serde_json::to_value(MetricsUpdate::finished(&Ok(Outcome::Committed(summary())), at(), 90)).unwrap();
        assert_eq!(
            row,
            json!({
                "status": "success",
                "finished_at": "2026-12-01T00:00:00Z",
                "step_durations_ms": { "merge": 40, "read-fragments": 10, "total": 90 },
                "input_fragments": 3,
                "input_bytes": 3000,
                "input_rows": 30,
                "output_files": 2,
                "output_bytes": 1500,
                "output_rows": 28,
                "consolidated_files": 1,
                "consolidated_rows": 5,
                "compression_ratio": 2.0,
                "error_message": "quarantined 1 segment(s): f cells: bad page",
            })
        );
    }

    #[test]
    fn a_skipped_run_is_skipped_not_a_success() {
        for reason in [SkipReason::LeaseHeld { by: "r1".into() }, SkipReason::NothingPending] {
            let row = serde_json::to_value(MetricsUpdate::finished(&Ok(Outcome::Skipped(reason)), at(), 5)).unwrap();
            assert_eq!(row["status"], "skipped");
            assert!(row["error_message"].as_str().unwrap().starts_with("coalesced"), "{row}");
            assert!(row.get("output_files").is_none(), "no figures: it did nothing");
        }
    }

    #[test]
    fn failures_name_their_step() {
        let failed = Err(RunError(StepError::Failed {
            step: "merge-0-3".into(),
            attempts: 3,
            message: "R2 did not answer".into(),
            timed_out_ms: Some(30_000),
        }));
        let row = serde_json::to_value(MetricsUpdate::finished(&failed, at(), 5)).unwrap();
        assert_eq!((row["status"].as_str(), row["error_step"].as_str()), (Some("failure"), Some("merge-0-3")));
        assert_eq!(row["error_timed_out_ms"], 30_000, "a timeout reads apart from an answered error");
        let answered = Err(RunError(StepError::failed_once("list-fragments", fusou_ports::PortError::new("D1 said no"))));
        let row = serde_json::to_value(MetricsUpdate::finished(&answered, at(), 5)).unwrap();
        assert!(row.get("error_timed_out_ms").is_none(), "{row}");
        let isolated = serde_json::to_value(MetricsUpdate::finished(&Ok(Outcome::Isolated { fragments: 4 }), at(), 5)).unwrap();
        assert_eq!(isolated["error_step"], "read-fragments");
        assert_eq!(serde_json::to_value(MetricsUpdate::dead_lettered(at())).unwrap()["status"], "dlq_failure");
        assert_eq!(serde_json::to_value(MetricsUpdate::invalid("no datasetId", at())).unwrap()["error_step"], "decode-message");
    }

    #[test]
    fn a_row_carries_the_messages_identity() {
        let message = fusou_testing::realtime_message("ds-1");
        let update = MetricsUpdate::running("run-1", at());
        let row = serde_json::to_value(MetricsRow::new(&message, Uuid::nil(), &update)).unwrap();
        assert_eq!(
            row,
            json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "dataset_id": "ds-1",
                "priority": "realtime",
                "table_name": null,
                "period_tag": null,
                "status": "running",
                "run_id": "run-1",
                "started_at": "2026-12-01T00:00:00Z",
            })
        );
    }
}
