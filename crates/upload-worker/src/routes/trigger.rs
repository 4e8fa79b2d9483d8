//! `POST /trigger-scheduled` (operator secret as bearer) and the cron trigger: request a
//! `scheduled` compaction for every dataset that needs one and holds no live lease, page by
//! page, with one metrics row each.

use fusou_core::index;
use fusou_core::index::SqlValue;
use fusou_core::message::{CompactionMessage, Priority};
use fusou_core::supabase::{self as rest, NewMetric};
use fusou_edge::log;
use fusou_edge::remote::Service;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;
use worker::{MessageBuilder, Request, Response};

use crate::auth;
use crate::context::Ctx;
use crate::http::{self, ApiError};
use crate::router::Call;

/// Datasets per page: one D1 query, one Supabase insert and one queue batch (at most 100) each.
const PAGE: u64 = 100;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TriggerReport {
    pub enqueued: u64,
    pub failed: u64,
    pub metrics_failed: u64,
    pub pages: u64,
}

pub(crate) async fn handle(req: Request, ctx: &Ctx, call: &Call) -> Result<Response, ApiError> {
    auth::operator(&req, ctx)?;
    let report = enqueue_due(ctx, call.route).await?;
    Ok(http::json(200, &report)?)
}

/// Enqueues every due dataset; used by the route and by the cron trigger.
pub(crate) async fn enqueue_due(ctx: &Ctx, source: &str) -> Result<TriggerReport, ApiError> {
    let db = ctx.db()?;
    let queue = ctx.queue()?;
    let now = fusou_edge::now_utc();
    let mut report = TriggerReport::default();
    let mut after = String::new();
    loop {
        let due: Vec<index::DueDataset> =
            db.all(index::DATASETS_DUE, &[now.timestamp_millis().into(), after.as_str().into(), SqlValue::from(PAGE)]).await?;
        let Some(last) = due.last() else { break };
        after = last.id.to_string();
        report.pages += 1;
        let messages: Vec<CompactionMessage> = due
            .iter()
            .map(|d| CompactionMessage {
                dataset_id: d.id.clone(),
                triggered_at: now,
                priority: Priority::Scheduled,
                metric_id: Some(Uuid::new_v4()),
                table: None,
                period_tag: None,
            })
            .collect();
        let metrics: Vec<NewMetric> = messages.iter().filter_map(NewMetric::queued).collect();
        if let Err(e) = ctx.supabase.execute(&rest::insert_metrics(&metrics)).await {
            report.metrics_failed += metrics.len() as u64;
            log::error("supabase.metric_failed", json!({ "route": source, "datasets": metrics.len(), "error": e.to_string() }));
        }
        let batch: Vec<_> = messages.iter().map(|m| MessageBuilder::new(m).build()).collect();
        match ctx.remote.call(Service::Queue, "the scheduled messages", queue.send_batch(batch)).await {
            Ok(()) => {
                report.enqueued += messages.len() as u64;
                log::info("queue.sent", json!({ "route": source, "priority": "scheduled", "datasets": messages.len() }));
            }
            Err(e) => {
                report.failed += messages.len() as u64;
                log::error("queue.send_failed", json!({ "route": source, "datasets": messages.len(), "error": e.to_string() }));
            }
        }
        if (due.len() as u64) < PAGE {
            break;
        }
    }
    Ok(report)
}
