//! The compaction workflow's ports over the platform: D1 for SQL and checkpoints, R2 for
//! objects, Supabase for the dataset registry (the clock is [`fusou_edge::WorkerClock`]). Every
//! call goes through [`fusou_edge::remote`]: none can hang a run.

use bytes::Bytes;
use fusou_contract::ids::DatasetId;
use fusou_core::index;
use fusou_core::index::{SqlValue, Statement};
use fusou_core::supabase::{self as rest, DatasetRow};
use fusou_edge::d1::{self, Db};
use fusou_edge::remote::{Remote, Service};
use fusou_edge::supabase::Supabase;
use fusou_ports::{Blobs, Checkpoint, CheckpointStore, DatasetRegistry, PortError, PortResult, Sql};
use serde::de::DeserializeOwned;
use worker::{Bucket, UploadedPart};

/// The battle-data index on D1.
pub(crate) struct D1(pub Db);

impl Sql for D1 {
    async fn query<T: DeserializeOwned>(&self, sql: &str, values: &[SqlValue]) -> PortResult<Vec<T>> {
        self.0.all(sql, values).await.map_err(PortError::from)
    }

    async fn run(&self, sql: &str, values: &[SqlValue]) -> PortResult<u64> {
        self.0.run(sql, values).await.map_err(PortError::from)
    }

    async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>> {
        let prepared =
            statements.iter().map(|s| self.0.statement(&s.sql, &s.params)).collect::<Result<Vec<_>, _>>().map_err(PortError::from)?;
        let results = self.0.batch(prepared).await.map_err(PortError::from)?;
        Ok(results.iter().map(d1::changes).collect())
    }
}

impl CheckpointStore for D1 {
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
        let rows: Vec<index::StepOutput> = self.0.all(index::STEP_OUTPUTS, &[run.into()]).await.map_err(PortError::from)?;
        Ok(rows.into_iter().map(|r| (r.step, r.output)).collect())
    }

    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String> {
        let Checkpoint { step, output, attempts, duration_ms, completed_at_ms } = *checkpoint;
        let params = [
            run.into(),
            step.into(),
            output.into(),
            SqlValue::from(attempts as u64),
            SqlValue::from(duration_ms),
            index::iso(completed_at_ms).into(),
        ];
        let row: Option<index::SavedOutput> = self.0.first(index::SAVE_STEP, &params).await.map_err(PortError::from)?;
        row.map(|r| r.output).ok_or_else(|| PortError::new("the step's checkpoint was not stored"))
    }
}

/// Battle data on R2.
pub(crate) struct R2 {
    pub bucket: Bucket,
    pub remote: Remote,
}

impl R2 {
    async fn call<T, E: std::fmt::Display>(&self, what: &str, call: impl Future<Output = Result<T, E>>) -> PortResult<T> {
        self.remote.call(Service::R2, what, call).await.map_err(PortError::from)
    }
}

impl Blobs for R2 {
    async fn get(&self, key: &str) -> PortResult<Option<Bytes>> {
        self.call("a GET", async {
            let Some(object) = self.bucket.get(key).execute().await? else { return Ok(None) };
            let body = object.body().ok_or_else(|| worker::Error::RustError("the object has no body".into()))?;
            Ok::<_, worker::Error>(Some(Bytes::from(body.bytes().await?)))
        })
        .await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> PortResult<()> {
        self.call("a PUT", self.bucket.put(key, Vec::from(bytes)).execute()).await.map(|_| ())
    }

    async fn create_multipart(&self, key: &str) -> PortResult<String> {
        let upload = self.call("a multipart create", self.bucket.create_multipart_upload(key).execute()).await?;
        Ok(upload.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> PortResult<String> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(PortError::new)?;
        let part = self.call("a part", upload.upload_part(number, Vec::from(bytes))).await?;
        Ok(part.etag())
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> PortResult<()> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(PortError::new)?;
        let parts = parts.into_iter().map(|(n, etag)| UploadedPart::new(n, etag));
        self.call("a multipart complete", upload.complete(parts)).await.map(|_| ())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> PortResult<()> {
        let upload = self.bucket.resume_multipart_upload(key, upload_id).map_err(PortError::new)?;
        self.call("a multipart abort", upload.abort()).await
    }

    async fn delete(&self, keys: &[String]) -> PortResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.call("a delete", self.bucket.delete_multiple(keys.iter().map(String::as_str).collect())).await
    }
}

/// The dataset registry in Supabase.
pub(crate) struct SupabaseRegistry<'a>(pub &'a Supabase);

impl DatasetRegistry for SupabaseRegistry<'_> {
    async fn ensure_dataset(&self, dataset: &str, owner: &str) -> PortResult<()> {
        let owner_id = owner.parse().map_err(|e| format!("owner {owner} is not a UUID: {e}"))?;
        let id = DatasetId::parse(dataset).map_err(PortError::new)?;
        let row = DatasetRow { id, owner_id, compaction_needed: true };
        self.0.execute(&rest::upsert_dataset(&row)).await.map(|_| ()).map_err(PortError::from)
    }
}
