//! Calls to Supabase's REST API (PostgREST) as data. The Workers execute a [`RestCall`] with
//! `fetch`, adding the service key as `apikey` and as bearer; what is called, with which
//! filters and `Prefer`, is decided here and tested natively.
//!
//! Filter values come only from validated types (dataset ids, UUIDs), whose characters need no
//! URL encoding.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::message::{CompactionMessage, Priority};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};

/// One request to `<SUPABASE_URL>/rest/v1/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCall {
    pub method: &'static str,
    /// Relative to `/rest/v1/`.
    pub path_and_query: String,
    pub prefer: Option<&'static str>,
    pub body: Option<String>,
}

impl RestCall {
    pub fn url(&self, supabase_url: &str) -> String {
        format!("{}/rest/v1/{}", supabase_url.trim_end_matches('/'), self.path_and_query)
    }

    /// The table it calls and how, for error messages ("POST processing_metrics").
    pub fn what(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
}

/// The lifecycle of a `processing_metrics` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricStatus {
    Pending,
    Queued,
    Running,
    Success,
    /// The run did nothing: another run held the dataset, or nothing was pending.
    Skipped,
    Failure,
    DlqFailure,
}

/// A `processing_metrics` row made when a compaction is requested.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewMetric {
    pub id: Uuid,
    pub dataset_id: DatasetId,
    pub status: MetricStatus,
    pub priority: Priority,
    pub table_name: Option<TableName>,
    pub period_tag: Option<PeriodTag>,
    pub queued_at: DateTime<Utc>,
}

impl NewMetric {
    /// The `queued` row that follows `message`, which must carry its `metricId`.
    pub fn queued(message: &CompactionMessage) -> Option<Self> {
        Some(Self {
            id: message.metric_id?,
            dataset_id: message.dataset_id.clone(),
            status: MetricStatus::Queued,
            priority: message.priority,
            table_name: message.table.clone(),
            period_tag: message.period_tag.clone(),
            queued_at: message.triggered_at,
        })
    }
}

/// The user-visible summary of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetRow {
    pub id: DatasetId,
    pub owner_id: Uuid,
    pub compaction_needed: bool,
}

/// Creates the dataset's row, or marks it as needing compaction.
pub fn upsert_dataset(row: &DatasetRow) -> RestCall {
    RestCall {
        method: "POST",
        path_and_query: "datasets?on_conflict=id".into(),
        prefer: Some("resolution=merge-duplicates,return=minimal"),
        body: Some(serde_json::to_string(&[row]).expect("rows serialize")),
    }
}

/// Inserts metrics rows (one request for many).
pub fn insert_metrics(rows: &[NewMetric]) -> RestCall {
    RestCall {
        method: "POST",
        path_and_query: "processing_metrics".into(),
        prefer: Some("return=minimal"),
        body: Some(serde_json::to_string(rows).expect("rows serialize")),
    }
}

/// Changes some columns of one metrics row.
pub fn patch_metric(id: Uuid, changes: &impl Serialize) -> RestCall {
    RestCall {
        method: "PATCH",
        path_and_query: format!("processing_metrics?id=eq.{id}"),
        prefer: Some("return=minimal"),
        body: Some(serde_json::to_string(changes).expect("changes serialize")),
    }
}

/// Changes some columns of one dataset's row (its summary, after a compaction).
pub fn patch_dataset(id: &DatasetId, changes: &serde_json::Value) -> RestCall {
    RestCall {
        method: "PATCH",
        path_and_query: format!("datasets?id=eq.{id}"),
        prefer: Some("return=minimal"),
        body: Some(changes.to_string()),
    }
}

/// Creates or updates one metrics row (it must carry `id`, `dataset_id` and `priority`).
pub fn upsert_metric(row: &impl Serialize) -> RestCall {
    RestCall {
        method: "POST",
        path_and_query: "processing_metrics?on_conflict=id".into(),
        prefer: Some("resolution=merge-duplicates,return=minimal"),
        body: Some(serde_json::to_string(&[row]).expect("rows serialize")),
    }
}

/// The latest runs of a dataset, newest first.
pub fn recent_metrics(dataset: &DatasetId, limit: u32) -> RestCall {
    RestCall {
        method: "GET",
        path_and_query: format!("processing_metrics?dataset_id=eq.{dataset}&order=created_at.desc&limit={limit}"),
        prefer: None,
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_have_postgrest_shape() {
        let ds = DatasetId::parse("ds-1").unwrap();
        let call = upsert_dataset(&DatasetRow { id: ds.clone(), owner_id: Uuid::nil(), compaction_needed: true });
        assert_eq!(call.url("https://p.supabase.co/"), "https://p.supabase.co/rest/v1/datasets?on_conflict=id");
        assert_eq!(
            call.body.as_deref(),
            Some(r#"[{"id":"ds-1","owner_id":"00000000-0000-0000-0000-000000000000","compaction_needed":true}]"#)
        );
        let msg = CompactionMessage {
            dataset_id: ds.clone(),
            triggered_at: "2026-11-28T00:00:00Z".parse().unwrap(),
            priority: Priority::Manual,
            metric_id: Some(Uuid::nil()),
            table: None,
            period_tag: None,
        };
        let row = NewMetric::queued(&msg).unwrap();
        let body: serde_json::Value = serde_json::from_str(insert_metrics(&[row]).body.as_deref().unwrap()).unwrap();
        assert_eq!(body[0]["status"], "queued");
        assert_eq!(body[0]["priority"], "manual");
        assert_eq!(body[0]["queued_at"], "2026-11-28T00:00:00Z");
        assert_eq!(recent_metrics(&ds, 5).path_and_query, "processing_metrics?dataset_id=eq.ds-1&order=created_at.desc&limit=5");
        assert_eq!(serde_json::to_value(MetricStatus::DlqFailure).unwrap(), "dlq_failure");
    }
}
