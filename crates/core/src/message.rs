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

/// How a batch's messages run ([`BatchPlan::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchPlan {
    /// Bodies that are not messages: answered first, they cost nothing.
    pub invalid: Vec<usize>,
    /// Run side by side, one lane per dataset, each lane its messages in the batch's order: runs
    /// of different datasets share only memory (bounded apart), while two runs of one dataset
    /// would only wait on its lease.
    pub lanes: Vec<Vec<usize>>,
    /// Run one at a time after the lanes: every message of a dataset for which an earlier
    /// invocation began a run and never finished it (it may have trapped on the dataset's
    /// bytes), the datasets whose runs died alone fewer times first. So a message that may trap never
    /// takes down a batch-mate that would not, and a batch-mate it did take down, reading beside
    /// it, gets an invocation of its own before it.
    pub alone: Vec<usize>,
}

impl BatchPlan {
    /// The plan for a batch whose messages are `messages` (each its dataset and run, `None`
    /// for a body that is not a message), given which runs were interrupted and how many of
    /// their invocations read alone.
    pub fn new(messages: &[Option<(&str, String)>], interrupted: &std::collections::HashMap<String, u64>) -> Self {
        let mut plan = BatchPlan::default();
        // A dataset is as suspect as its most suspect run: its runs all read its pending bytes.
        let mut suspect: std::collections::HashMap<&str, u64> = Default::default();
        for (dataset, run) in messages.iter().flatten() {
            if let Some(&died_alone) = interrupted.get(run) {
                let most = suspect.entry(dataset).or_default();
                *most = (*most).max(died_alone);
            }
        }
        let mut lanes: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match message {
                None => plan.invalid.push(i),
                Some((dataset, _)) if suspect.contains_key(dataset) => plan.alone.push(i),
                Some((dataset, _)) => match lanes.iter_mut().find(|(d, _)| d == dataset) {
                    Some((_, lane)) => lane.push(i),
                    None => lanes.push((dataset, vec![i])),
                },
            }
        }
        plan.alone.sort_by_key(|&i| messages[i].as_ref().map(|(dataset, _)| suspect[dataset]));
        plan.lanes = lanes.into_iter().map(|(_, lane)| lane).collect();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_runs_one_lane_per_dataset_and_what_may_trap_alone_afterwards() {
        let m = |dataset: &'static str, run: &str| Some((dataset, run.to_owned()));
        let messages = vec![m("a", "a1"), m("b", "b1"), None, m("a", "a2"), m("s", "s1"), m("c", "c1"), m("s", "s2"), m("t", "t1")];
        // s1 died alone twice (s2 reads the same dataset); t1 died only beside others.
        let interrupted = [("s1".to_owned(), 2), ("t1".to_owned(), 0)].into_iter().collect();
        let plan = BatchPlan::new(&messages, &interrupted);
        assert_eq!(plan.invalid, [2]);
        assert_eq!(plan.lanes, [vec![0, 3], vec![1], vec![5]], "a lane per dataset, in the batch's order");
        assert_eq!(plan.alone, [7, 4, 6], "every message of a suspect dataset, the least suspect first");
        let calm = BatchPlan::new(&messages, &Default::default());
        assert_eq!(calm.lanes, [vec![0, 3], vec![1], vec![4, 6], vec![5], vec![7]]);
        assert!(calm.alone.is_empty(), "nothing suspect: every dataset has its lane");
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
