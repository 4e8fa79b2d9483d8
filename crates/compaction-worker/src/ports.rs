//! The compaction workflow's ports over the platform: D1 for SQL and checkpoints, R2 for
//! objects, Supabase for the dataset catalog, the Worker's clock and timers.

use std::time::Duration;

use bytes::Bytes;
use fusou_core::commit::{SqlValue, Statement};
use fusou_core::compaction::{Blobs, Catalog, Sql};
use fusou_core::ids::DatasetId;
use fusou_core::supabase::{self as rest, DatasetRow};
use fusou_core::index;
use fusou_core::workflow::{Checkpoint, CheckpointStore, Clock};
use fusou_edge::d1::{self, Param};
use fusou_edge::supabase::Supabase;
use serde_json::{Map, Value};
use worker::{Bucket, D1Database, Delay, UploadedPart};

fn param(v: &SqlValue) -> Param<'_> {
    match v {
        SqlValue::Text(s) => Param::Text(s),
        SqlValue::Int(n) => Param::Int(*n),
        SqlValue::Null => Param::Null,
    }
}

fn params(values: &[SqlValue]) -> Vec<Param<'_>> {
    values.iter().map(param).collect()
}

/// The battle-data index on D1.
pub struct D1(pub D1Database);

impl Sql for D1 {
    async fn rows(&self, sql: &str, values: &[SqlValue]) -> Result<Vec<Map<String, Value>>, String> {
        d1::all(&self.0, sql, &params(values)).await.map_err(|e| e.to_string())
    }

    async fn batch(&self, statements: &[Statement]) -> Result<Vec<u64>, String> {
        let prepared = statements
            .iter()
            .map(|s| d1::statement(&self.0, &s.sql, &params(&s.params)))
            .collect::<worker::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let results = self.0.batch(prepared).await.map_err(|e| e.to_string())?;
        Ok(results.iter().map(|r| r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0) as u64).collect())
    }
}

impl CheckpointStore for D1 {
    async fn outputs(&self, run: &str) -> Result<Vec<(String, String)>, String> {
        #[derive(serde::Deserialize)]
        struct Row {
            step: String,
            output: String,
        }
        let rows: Vec<Row> = d1::all(&self.0, index::STEP_OUTPUTS, &[run.into()]).await.map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|r| (r.step, r.output)).collect())
    }

    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Row {
            output: String,
        }
        let Checkpoint { step, output, attempts, duration_ms, completed_at_ms } = *checkpoint;
        let completed_at = index::iso(completed_at_ms);
        let params = [run.into(), step.into(), output.into(), Param::from(attempts as u64), Param::from(duration_ms), completed_at.as_str().into()];
        let row: Option<Row> = d1::first(&self.0, index::SAVE_STEP, &params).await.map_err(|e| e.to_string())?;
        row.map(|r| r.output).ok_or_else(|| "the step's checkpoint was not stored".to_string())
    }
}

/// Battle data on R2.
pub struct R2(pub Bucket);

impl Blobs for R2 {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let Some(object) = self.0.get(key).execute().await.map_err(|e| e.to_string())? else { return Ok(None) };
        let body = object.body().ok_or("the object has no body")?;
        Ok(Some(Bytes::from(body.bytes().await.map_err(|e| e.to_string())?)))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), String> {
        self.0.put(key, Vec::from(bytes)).execute().await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, String> {
        let upload = self.0.create_multipart_upload(key).execute().await.map_err(|e| e.to_string())?;
        Ok(upload.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> Result<String, String> {
        let upload = self.0.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        let part = upload.upload_part(number, Vec::from(bytes)).await.map_err(|e| e.to_string())?;
        Ok(part.etag())
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> Result<(), String> {
        let upload = self.0.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        upload
            .complete(parts.into_iter().map(|(n, etag)| UploadedPart::new(n, etag)))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), String> {
        let upload = self.0.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        upload.abort().await.map_err(|e| e.to_string())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        self.0.delete_multiple(keys.iter().map(String::as_str).collect()).await.map_err(|e| e.to_string())
    }
}

/// The dataset catalog in Supabase.
pub struct SupabaseCatalog(pub Option<Supabase>);

impl Catalog for SupabaseCatalog {
    async fn ensure_dataset(&self, dataset: &DatasetId, owner: &str) -> Result<(), String> {
        let supabase = self.0.as_ref().ok_or("SUPABASE_URL or SUPABASE_SERVICE_KEY is not set")?;
        let owner_id = owner.parse().map_err(|e| format!("owner {owner} is not a UUID: {e}"))?;
        let row = DatasetRow { id: dataset.clone(), owner_id, compaction_needed: true };
        supabase.execute(&rest::upsert_dataset(&row)).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The Worker's clock and timers.
pub struct WorkerClock;

impl Clock for WorkerClock {
    fn now_ms(&self) -> u64 {
        fusou_edge::now_ms()
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }
}
