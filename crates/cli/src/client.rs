//! The FUSOU client's upload, byte for byte: the handshake, then the raw body.

use fusou_core::upload::ContentHash;
use serde_json::{Value, json};

/// How one upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// 409 in either phase: the dataset already holds these bytes.
    Skipped,
}

pub struct Uploader {
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
    pub fn new(service: &str, token: String) -> Self {
        Self { http: reqwest::Client::new(), endpoint: format!("{}/api/battle-data/upload", service.trim_end_matches('/')), token }
    }

    /// Uploads `bytes`, whose segments `offsets_json` (a JSON array, sent as a string) lists.
    pub async fn upload(&self, dataset: &str, period: &str, bytes: &[u8], offsets_json: &str) -> Result<Outcome, String> {
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
        let resp = self.http.post(&self.endpoint).bearer_auth(&self.token).json(&handshake).send().await;
        let (status, body) = answer(resp.map_err(|e| format!("handshake: {e}"))?).await?;
        match status {
            200 => {}
            409 => return Ok(Outcome::Skipped),
            _ => return Err(format!("handshake answered {status}: {}", body["error"])),
        }
        let url = body["uploadUrl"].as_str().ok_or("the handshake gave no uploadUrl")?;
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await;
        let (status, body) = answer(resp.map_err(|e| format!("upload: {e}"))?).await?;
        match status {
            200 => Ok(Outcome::Stored),
            409 => Ok(Outcome::Skipped),
            _ => Err(format!("upload answered {status}: {}", body["error"])),
        }
    }
}
