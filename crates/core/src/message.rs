//! The compaction queue message.
//!
//! One type for every producer (the upload routes, the owner's repair, the schedule, a run's own
//! continuation) and for the consumer, so that the shape cannot drift between them. On the wire it
//! is camelCase JSON, as the design document names the fields; storage keys never travel in it:
//! they come from the D1 rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use fusou_contract::ids::{DatasetId, PeriodTag, TableName};

/// Largest message body a queue accepts (128 KB); ours are a few hundred bytes.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Who asked for a compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A user's upload.
    Realtime,
    /// A dataset owner's repair request.
    Manual,
    /// The schedule.
    Scheduled,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Realtime => "realtime",
            Priority::Manual => "manual",
            Priority::Scheduled => "scheduled",
        }
    }
}

/// A request to compact one dataset, optionally narrowed to one table and period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompactionMessage {
    pub dataset_id: DatasetId,
    pub triggered_at: DateTime<Utc>,
    pub priority: Priority,
    /// The `processing_metrics` row that follows this request. Every producer sends one; a
    /// consumer that gets none makes its own row, so that every run can be seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_tag: Option<PeriodTag>,
}

/// Why a message body was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is {0} bytes, more than the queue's {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("invalid compaction message: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl CompactionMessage {
    /// Decodes and validates a message body. Every field is checked by its type, so a value
    /// that decodes is safe to use in keys and queries.
    pub fn from_json(body: &[u8]) -> Result<Self, MessageError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge(body.len()));
        }
        Ok(serde_json::from_slice(body)?)
    }

    /// Decodes a message that a queue binding has already parsed into a JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, MessageError> {
        Ok(serde_json::from_value(value)?)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CompactionMessage always serializes")
    }

    /// The id of the compaction run this message asks for: a digest of the whole message, so a
    /// redelivered message resumes its run and a new message starts a new one.
    pub fn run_id(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.to_json().as_bytes())[..12])
    }
}

/// The order a batch's messages run in: each by its position, those whose run is in
/// `interrupted` (an earlier invocation began it and never finished: it may have trapped on
/// its bytes) after all the others, the batch's order kept otherwise. A message that may trap
/// thus never takes down a batch-mate that would not; undecodable bodies (`None`) go first,
/// as they cost nothing.
pub fn batch_order(runs: &[Option<String>], interrupted: &std::collections::HashSet<String>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].as_ref().is_some_and(|run| interrupted.contains(run)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_that_may_trap_run_after_their_batch_mates() {
        let runs: Vec<Option<String>> = vec![Some("a".into()), Some("suspect".into()), None, Some("b".into()), Some("other".into())];
        let interrupted = ["suspect".to_owned(), "other".to_owned()].into_iter().collect();
        assert_eq!(batch_order(&runs, &interrupted), [0, 2, 3, 1, 4]);
        assert_eq!(batch_order(&runs, &Default::default()), [0, 1, 2, 3, 4], "nothing suspect: the batch's order");
    }

    fn check_refused(body: &str) {
        assert!(CompactionMessage::from_json(body.as_bytes()).is_err(), "accepted: {body}");
    }

    #[test]
    fn round_trip_in_camel_case() {
        let msg = CompactionMessage {
            dataset_id: DatasetId::parse("ds-1").unwrap(),
            triggered_at: "2026-11-28T01:02:03Z".parse().unwrap(),
            priority: Priority::Realtime,
            metric_id: Some(Uuid::nil()),
            table: Some(TableName::parse("port_table").unwrap()),
            period_tag: Some(PeriodTag::parse("2025-11-05").unwrap()),
        };
        let json = msg.to_json();
        assert_eq!(
            json,
            r#"{"datasetId":"ds-1","triggeredAt":"2026-11-28T01:02:03Z","priority":"realtime","metricId":"00000000-0000-0000-0000-000000000000","table":"port_table","periodTag":"2025-11-05"}"#
        );
        assert_eq!(CompactionMessage::from_json(json.as_bytes()).unwrap(), msg);
    }

    #[test]
    fn optional_fields_may_be_absent_and_offsets_are_normalised() {
        let msg = CompactionMessage::from_json(br#"{"datasetId":"ds","triggeredAt":"2026-11-28T10:00:00+09:00","priority":"scheduled"}"#)
            .unwrap();
        assert_eq!(msg.metric_id, None);
        assert_eq!(msg.triggered_at.to_rfc3339(), "2026-11-28T01:00:00+00:00");
    }

    #[test]
    fn run_ids_follow_the_whole_message() {
        let a = CompactionMessage::from_json(br#"{"datasetId":"ds","triggeredAt":"2026-11-28T00:00:00Z","priority":"manual"}"#).unwrap();
        let again =
            CompactionMessage::from_json(br#"{"priority":"manual","datasetId":"ds","triggeredAt":"2026-11-28T09:00:00+09:00"}"#).unwrap();
        assert_eq!(a.run_id(), again.run_id(), "the same message, written differently");
        assert_eq!(a.run_id().len(), 24);
        let later = CompactionMessage { triggered_at: "2026-11-28T00:00:01Z".parse().unwrap(), ..a.clone() };
        assert_ne!(a.run_id(), later.run_id());
    }

    #[test]
    fn invalid_messages_are_refused() {
        check_refused("not json");
        check_refused(r#"{"triggeredAt":"2026-11-28T01:02:03Z","priority":"manual"}"#);
        check_refused(r#"{"datasetId":"ds","priority":"manual"}"#);
        check_refused(r#"{"datasetId":"ds","triggeredAt":"yesterday","priority":"manual"}"#);
        check_refused(r#"{"datasetId":"ds","triggeredAt":"2026-11-28T01:02:03Z","priority":"urgent"}"#);
        check_refused(r#"{"datasetId":"../x","triggeredAt":"2026-11-28T01:02:03Z","priority":"manual"}"#);
        check_refused(r#"{"datasetId":"ds","triggeredAt":"2026-11-28T01:02:03Z","priority":"manual","table":"A/B"}"#);
        check_refused(r#"{"datasetId":"ds","triggeredAt":"2026-11-28T01:02:03Z","priority":"manual","metricId":"x"}"#);
        // The old service put storage keys in messages; this one never does.
        check_refused(r#"{"datasetId":"ds","triggeredAt":"2026-11-28T01:02:03Z","priority":"manual","bucketKey":"k"}"#);
        let huge = format!(r#"{{"datasetId":"{}"}}"#, "a".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(CompactionMessage::from_json(huge.as_bytes()), Err(MessageError::TooLarge(_))));
    }
}
