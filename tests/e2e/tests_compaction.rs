//! Compaction end to end: fragments uploaded as the client uploads them come back, through the
//! owner's download route, as compacted Parquet holding exactly their rows, once each.

use serde_json::json;

use crate::support::*;
use crate::{ensure, ensure_eq};

pub const TESTS: &[(&str, Test)] = &[("compaction::uploaded_rows_come_back_compacted_exactly_once", uploaded_rows_come_back)];

fn uploaded_rows_come_back() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..6).map(|i| small_fragment(700 + i)).collect();
    for f in &fragments {
        upload(&token, &dataset, "2025-11-12", f)?;
    }

    wait_until_compacted(&dataset, &token, 150)?;
    let (outputs, mut got) = compacted_rows(&dataset, &token)?;
    ensure!(outputs.len() >= 32, "{} outputs", outputs.len());
    ensure!(outputs.iter().all(|o| o["key"].as_str().unwrap_or_default().starts_with(&format!("battle_compacted/2025-11-12/{dataset}/"))), "keys: {outputs:?}");

    // Exactly the uploaded rows, each once.
    ensure_same_rows(&mut got, &fragments, &[])?;

    // The runs are visible: metrics rows that finished with success and figures.
    let metrics = pg_json(&[], &format!(
        "SELECT status::text, output_files, input_rows FROM public.processing_metrics WHERE dataset_id = '{dataset}' AND status = 'success' AND output_files > 0"))?;
    let total: u64 = metrics.as_array().into_iter().flatten().filter_map(|m| m["input_rows"].as_u64()).sum();
    let uploaded: u64 = fragments.iter().map(|f| f.total_rows()).sum();
    ensure_eq!(total, uploaded, "rows counted by the runs' metrics: {metrics}");

    // The dataset's summary in Supabase follows the index.
    let summary = pg_json(&[], &format!(
        "SELECT compaction_needed, compacted_file_count, file_count, last_compacted_at IS NOT NULL AS compacted FROM public.datasets WHERE id = '{dataset}'"))?;
    ensure_eq!(summary, json!([{ "compaction_needed": false, "compacted_file_count": outputs.len(), "file_count": 6, "compacted": true }]));
    Ok(())
}
