//! `fusou lake-sync`: a local mirror of the open tables. Local R2 has no S3 API, so the local
//! stack's tables name `file://` locations (`LAKE_LOCATION`); this fetches what they reference
//! (metadata files, manifest lists, manifests, data files) through the operator's object route
//! into those very paths. Objects never change once written: what is there is kept.

use std::path::Path;

use fusou_lake::metadata::TableMetadata;
use serde_json::Value;

pub(crate) async fn sync(url: &str, operator_secret: &str) -> Result<(), String> {
    let http = reqwest::Client::new();
    let get_json = async |path: &str| -> Result<Value, String> {
        let resp = http.get(format!("{url}/api{path}")).bearer_auth(operator_secret).send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {body}"));
        }
        Ok(body)
    };
    let listed = get_json("/iceberg/v1/namespaces/fusou/tables").await?;
    let (mut tables, mut fetched, mut bytes) = (0, 0, 0);
    for id in listed["identifiers"].as_array().into_iter().flatten() {
        let name = id["name"].as_str().unwrap_or_default();
        let loaded = get_json(&format!("/iceberg/v1/namespaces/fusou/tables/{name}")).await?;
        let location = loaded["metadata-location"].as_str().ok_or("no metadata-location")?;
        let root = location.split("/lake/fusou/").next().unwrap_or_default().to_owned();
        let dir = root
            .strip_prefix("file://")
            .ok_or_else(|| format!("{location} is not a local file: deployed tables are read through R2's S3 API, not mirrored"))?;
        write(
            &Path::new(dir).join(location.strip_prefix(&format!("{root}/")).unwrap_or_default()),
            loaded["metadata"].to_string().as_bytes(),
        )?;
        let metadata: TableMetadata = serde_json::from_value(loaded["metadata"].clone()).map_err(|e| format!("{name}: {e}"))?;
        let copy = async |key: &str| -> Result<Vec<u8>, String> {
            let local = Path::new(dir).join(key);
            if let Ok(bytes) = std::fs::read(&local) {
                return Ok(bytes);
            }
            let resp = http
                .get(format!("{url}/api/lake/object"))
                .query(&[("key", key)])
                .bearer_auth(operator_secret)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{key}: {}", resp.status()));
            }
            let data = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
            write(&local, &data)?;
            Ok(data)
        };
        let keys = fusou_lake::mirror::referenced(&metadata, &root, &copy).await?;
        for key in &keys {
            bytes += copy(key).await?.len();
        }
        fetched += keys.len();
        tables += 1;
    }
    println!("mirrored {tables} tables: {fetched} objects ({bytes} bytes)");
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
