//! The FUSOU client's upload, byte for byte: the handshake, then the raw body.

use std::time::{Duration, Instant};

use fusou_core::upload::ContentHash;
use serde_json::{Value, json};

/// How one upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Stored,
    /// 409 in either phase: the dataset already holds these bytes.
    Skipped,
}

/// Where one upload's time went: each phase as the client waited on it, and the Worker's own
/// execution time over both (its `Server-Timing: cpu` headers).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timings {
    pub handshake: Duration,
    /// `None` when the handshake already ended the upload (409).
    pub body: Option<Duration>,
    pub worker_cpu_ms: Option<f64>,
}

impl Timings {
    fn add_cpu(&mut self, response: &reqwest::Response) {
        if let Some(ms) = server_cpu_ms(response) {
            self.worker_cpu_ms = Some(self.worker_cpu_ms.unwrap_or(0.0) + ms);
        }
    }
}

/// The `cpu;dur=<ms>` entry of a `Server-Timing` header.
fn server_cpu_ms(response: &reqwest::Response) -> Option<f64> {
    let header = response.headers().get("server-timing")?.to_str().ok()?;
    header.split(',').find_map(|metric| metric.trim().strip_prefix("cpu;dur=")?.parse().ok())
}

pub(crate) struct Uploader {
    pub http: reqwest::Client,
    /// `<service>/api/battle-data/upload`, as the client's endpoint setting names it.
    pub endpoint: String,
    pub token: String,
}

async fn answer(resp: reqwest::Response) -> Result<(u16, Value), String> {
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": text }))))
}

impl Uploader {
    pub(crate) fn new(service: &str, token: String) -> Self {
        Self { http: reqwest::Client::new(), endpoint: format!("{}/api/battle-data/upload", service.trim_end_matches('/')), token }
    }

    /// Uploads `bytes`, whose segments `offsets_json` (a JSON array, sent as a string) lists.
    pub(crate) async fn upload(&self, dataset: &str, period: &str, bytes: &[u8], offsets_json: &str) -> Result<(Outcome, Timings), String> {
        let mut timings = Timings::default();
        let handshake = json!({
            "path": format!("{period}-port.bin"),
            "binary": true,
            "dataset_id": dataset,
            "table": "port_table",
            "kc_period_tag": period,
            "file_size": bytes.len().to_string(),
            "table_offsets": offsets_json,
            "content_hash": ContentHash::of(bytes).as_str(),
        });
        let started = Instant::now();
        let resp = self.http.post(&self.endpoint).bearer_auth(&self.token).json(&handshake).send().await;
        let resp = resp.map_err(|e| format!("handshake: {e}"))?;
        timings.add_cpu(&resp);
        let (status, body) = answer(resp).await?;
        timings.handshake = started.elapsed();
        match status {
            200 => {}
            409 => return Ok((Outcome::Skipped, timings)),
            _ => return Err(format!("handshake answered {status}: {}", body["error"])),
        }
        let url = body["uploadUrl"].as_str().ok_or("the handshake gave no uploadUrl")?;
        let started = Instant::now();
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await;
        let resp = resp.map_err(|e| format!("upload: {e}"))?;
        timings.add_cpu(&resp);
        let (status, body) = answer(resp).await?;
        timings.body = Some(started.elapsed());
        match status {
            200 => Ok((Outcome::Stored, timings)),
            409 => Ok((Outcome::Skipped, timings)),
            _ => Err(format!("upload answered {status}: {}", body["error"])),
        }
    }
}
