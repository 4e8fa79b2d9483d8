//! Compaction end to end: fragments uploaded as the client uploads them come back, through the
//! owner's download route, as compacted Parquet holding exactly their rows, once each.

use std::collections::BTreeMap;

use arrow_array::{Array, BooleanArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::support::*;
use crate::{ensure, ensure_eq};

pub const TESTS: &[(&str, Test)] = &[("compaction::uploaded_rows_come_back_compacted_exactly_once", uploaded_rows_come_back)];

/// Each row as text, by column name, so rows compare by value whatever file they landed in.
fn rows(batch: &RecordBatch) -> Vec<String> {
    let schema = batch.schema();
    let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names.sort_unstable();
    (0..batch.num_rows())
        .map(|r| {
            names
                .iter()
                .map(|name| {
                    let col = batch.column_by_name(name).unwrap();
                    let any = col.as_any();
                    let v = if col.is_null(r) {
                        "∅".to_string()
                    } else if let Some(a) = any.downcast_ref::<StringArray>() {
                        a.value(r).to_string()
                    } else if let Some(a) = any.downcast_ref::<Int32Array>() {
                        a.value(r).to_string()
                    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                        a.value(r).to_string()
                    } else if let Some(a) = any.downcast_ref::<Float32Array>() {
                        a.value(r).to_string()
                    } else if let Some(a) = any.downcast_ref::<BooleanArray>() {
                        a.value(r).to_string()
                    } else {
                        format!("?{}", col.data_type())
                    };
                    format!("{name}={v}")
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn uploaded_rows_come_back() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..6).map(|i| small_fragment(700 + i)).collect();
    for f in &fragments {
        upload(&token, &dataset, "2025-11-12", f)?;
    }

    // Wait, watching the owner's status route, until nothing is pending and no run holds the dataset.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
    loop {
        let (status, state) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}", stack().url)).bearer_auth(&token))?;
        ensure_eq!(status, 200, "{state}");
        if state["pending"]["fragments"] == 0 && state["compaction"]["inProgress"] == false {
            ensure_eq!(state["compaction"]["needed"], false, "{state}");
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "still pending after 150 s: {state}");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }

    // Every output, listed and downloaded through the owner's routes.
    let (status, listing) = send(stack().http.get(format!("{}/api/battle-data/datasets/{dataset}/outputs?limit=1000", stack().url)).bearer_auth(&token))?;
    ensure_eq!(status, 200, "{listing}");
    let outputs = listing["outputs"].as_array().ok_or("no outputs")?.clone();
    ensure!(outputs.len() >= 32, "{} outputs", outputs.len());
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in &outputs {
        let key = o["key"].as_str().ok_or("key")?;
        ensure!(key.starts_with(&format!("battle_compacted/2025-11-12/{dataset}/")), "{key}");
        let resp = stack()
            .http
            .get(format!("{}/api/battle-data/datasets/{dataset}/outputs/download", stack().url))
            .query(&[("key", key)])
            .bearer_auth(&token)
            .send()
            .map_err(|e| e.to_string())?;
        ensure_eq!(resp.status().as_u16(), 200, "download {key}");
        let file = Bytes::from(resp.bytes().map_err(|e| e.to_string())?.to_vec());
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format!("{key}: {e}"))?.build().map_err(|e| e.to_string())?;
        let table = o["table_name"].as_str().ok_or("table")?.to_owned();
        let mut count = 0;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            count += batch.num_rows();
            got.entry(table.clone()).or_default().extend(rows(&batch));
        }
        ensure_eq!(Value::from(count), o["row_count"], "{key}: rows against D1's row_count");
    }

    // Exactly the uploaded rows, each once.
    for table in fusou_core::synth::client_tables() {
        let mut expected: Vec<String> = fragments
            .iter()
            .flat_map(|f| rows(&f.segments.iter().find(|s| s.table == table.name).unwrap().batch))
            .collect();
        let mut actual = got.remove(table.name.as_str()).unwrap_or_default();
        expected.sort();
        actual.sort();
        ensure_eq!(actual.len(), expected.len(), "{} rows", table.name);
        ensure!(actual == expected, "{}: compacted rows differ from the uploaded ones", table.name);
    }

    // The runs are visible: metrics rows that finished with success and figures.
    let metrics = pg_json(&[], &format!(
        "SELECT status::text, output_files, input_rows FROM public.processing_metrics WHERE dataset_id = '{dataset}' AND status = 'success' AND output_files > 0"))?;
    let total: u64 = metrics.as_array().into_iter().flatten().filter_map(|m| m["input_rows"].as_u64()).sum();
    let uploaded: u64 = fragments.iter().map(|f| f.total_rows()).sum();
    ensure_eq!(total, uploaded, "rows counted by the runs' metrics: {metrics}");
    Ok(())
}
