//! The compaction workflow's ports over the platform: D1 for SQL and checkpoints, R2 for
//! objects, Supabase for the dataset catalog (the clock is [`fusou_edge::WorkerClock`]). Every
//! call goes through [`fusou_edge::remote`]: none can hang a run.

use bytes::Bytes;
use fusou_core::compaction::{Blobs, Catalog, Sql};
use fusou_core::ids::DatasetId;
use fusou_core::index;
use fusou_core::index::{SqlValue, Statement};
use fusou_core::supabase::{self as rest, DatasetRow};
use fusou_core::workflow::{Checkpoint, CheckpointStore};
use fusou_edge::d1::{self, Db};
use fusou_edge::remote::{Remote, Service};
use fusou_edge::supabase::Supabase;
use serde::de::DeserializeOwned;
use worker::{Bucket, UploadedPart};

/// The battle-data index on D1.
pub struct D1(pub Db);

impl Sql for D1 {
    async fn query<T: DeserializeOwned>(&self, sql: &str, values: &[SqlValue]) -> Result<Vec<T>, String> {
        self.0.all(sql, values).await.map_err(|e| e.to_string())
    }

    async fn run(&self, sql: &str, values: &[SqlValue]) -> Result<u64, String> {
        self.0.run(sql, values).await.map_err(|e| e.to_string())
    }

    async fn batch(&self, statements: &[Statement]) -> Result<Vec<u64>, String> {
        let prepared =
            statements.iter().map(|s| self.0.statement(&s.sql, &s.params)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let results = self.0.batch(prepared).await.map_err(|e| e.to_string())?;
        Ok(results.iter().map(d1::changes).collect())
    }
}

impl CheckpointStore for D1 {
    async fn outputs(&self, run: &str) -> Result<Vec<(String, String)>, String> {
        let rows: Vec<index::StepOutput> = self.0.all(index::STEP_OUTPUTS, &[run.into()]).await.map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|r| (r.step, r.output)).collect())
    }

    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> Result<String, String> {
        let Checkpoint { step, output, attempts, duration_ms, completed_at_ms } = *checkpoint;
        let params = [
            run.into(),
            step.into(),
            output.into(),
            SqlValue::from(attempts as u64),
            SqlValue::from(duration_ms),
            index::iso(completed_at_ms).into(),
        ];
        let row: Option<index::SavedOutput> = self.0.first(index::SAVE_STEP, &params).await.map_err(|e| e.to_string())?;
        row.map(|r| r.output).ok_or_else(|| "the step's checkpoint was not stored".to_string())
    }
}

/// Battle data on R2.
pub struct R2 {
    pub bucket: Bucket,
    pub remote: Remote,
}

impl R2 {
    async fn call<T, E: std::fmt::Display>(&self, what: &str, call: impl Future<Output = Result<T, E>>) -> Result<T, String> {
        self.remote.call(Service::R2, what, call).await.map_err(|e| e.to_string())
    }
}

impl Blobs for R2 {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        self.call("a GET", async {
            let Some(object) = self.bucket.get(key).execute().await? else { return Ok(None) };
            let body = object.body().ok_or_else(|| worker::Error::RustError("the object has no body".into()))?;
            Ok::<_, worker::Error>(Some(Bytes::from(body.bytes().await?)))
        })
        .await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), String> {
        self.call("a PUT", self.bucket.put(key, Vec::from(bytes)).execute()).await.map(|_| ())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, String> {
        let upload = self.call("a multipart create", self.bucket.create_multipart_upload(key).execute()).await?;
        Ok(upload.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> Result<String, String> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        let part = self.call("a part", upload.upload_part(number, Vec::from(bytes))).await?;
        Ok(part.etag())
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> Result<(), String> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        let parts = parts.into_iter().map(|(n, etag)| UploadedPart::new(n, etag));
        self.call("a multipart complete", upload.complete(parts)).await.map(|_| ())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), String> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(|e| e.to_string())?;
        self.call("a multipart abort", upload.abort()).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        self.call("a delete", self.bucket.delete_multiple(keys.iter().map(String::as_str).collect())).await
    }
}

/// The dataset catalog in Supabase.
pub struct SupabaseCatalog<'a>(pub &'a Supabase);

impl Catalog for SupabaseCatalog<'_> {
    async fn ensure_dataset(&self, dataset: &DatasetId, owner: &str) -> Result<(), String> {
        let owner_id = owner.parse().map_err(|e| format!("owner {owner} is not a UUID: {e}"))?;
        let row = DatasetRow { id: dataset.clone(), owner_id, compaction_needed: true };
        self.0.execute(&rest::upsert_dataset(&row)).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
