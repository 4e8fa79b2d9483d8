//! Compaction end to end: fragments uploaded as the client uploads them come back, through the
//! owner's download route, as compacted Parquet holding exactly their rows, once each.

use serde_json::json;

use crate::support::*;
use crate::{ensure, ensure_eq};

pub(crate) const TESTS: &[(&str, Test)] = &[
    ("compaction::uploaded_rows_come_back_compacted_exactly_once", uploaded_rows_come_back),
    ("compaction::small_files_are_merged_and_every_row_stays_counted_once", consolidation),
    ("compaction::the_largest_accepted_fragment_is_compacted_whole", largest_fragment),
];

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
    ensure!(
        outputs.iter().all(|o| o["key"].as_str().unwrap_or_default().starts_with(&format!("battle_compacted/2025-11-12/{dataset}/"))),
        "keys: {outputs:?}"
    );

    // Exactly the uploaded rows, each once.
    ensure_same_rows(&mut got, &fragments, &[])?;

    // The runs are visible: metrics rows that finished with success and figures. (A run that
    // merged earlier runs' files counts their rows too, as consolidated rows.)
    let metrics = pg_json(
        &[],
        &format!(
            "SELECT status::text, output_files, input_rows - coalesce(consolidated_rows, 0) AS new_rows, \
             input_fragments + coalesce(consolidated_files, 0) AS inputs, r2_class_a, r2_class_b, subrequests \
             FROM public.processing_metrics WHERE dataset_id = '{dataset}' AND status = 'success' AND output_files > 0"
        ),
    )?;
    let total: u64 = metrics.as_array().into_iter().flatten().filter_map(|m| m["new_rows"].as_u64()).sum();
    let uploaded: u64 = fragments.iter().map(|f| f.total_rows()).sum();
    ensure_eq!(total, uploaded, "rows counted by the runs' metrics: {metrics}");
    // Each run's own billable operations, though runs of other tests' datasets share its
    // invocation: a put per (single-part) output, a get per input.
    for run in metrics.as_array().into_iter().flatten() {
        ensure_eq!((&run["r2_class_a"], &run["r2_class_b"]), (&run["output_files"], &run["inputs"]), "{run}");
        ensure!(run["subrequests"].as_u64() > run["r2_class_a"].as_u64(), "{run}");
    }

    // The dataset's summary in Supabase follows the index.
    let summary = pg_json(
        &[],
        &format!(
            "SELECT compaction_needed, compacted_file_count, file_count, last_compacted_at IS NOT NULL AS compacted FROM public.datasets WHERE id = '{dataset}'"
        ),
    )?;
    ensure_eq!(summary, json!([{ "compaction_needed": false, "compacted_file_count": outputs.len(), "file_count": 6, "compacted": true }]));
    Ok(())
}

/// The test stack consolidates at a fan-in of 2 (`scripts/test.sh`): the third run merges the
/// first two runs' files with its own fragment.
fn consolidation() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let fragments: Vec<_> = (0..3).map(|i| small_fragment(750 + i)).collect();
    let mut first_outputs = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        upload(&token, &dataset, "2025-11-12", f)?;
        wait_until_compacted(&dataset, &token, 150)?;
        let (outputs, _) = compacted_rows(&dataset, &token)?;
        if i < 2 {
            ensure_eq!(outputs.len(), 32 * (i + 1), "run {i}: one file per table, none merged yet");
            first_outputs.extend(outputs.iter().filter_map(|o| o["key"].as_str().map(str::to_owned)));
        }
    }
    let (outputs, mut got) = compacted_rows(&dataset, &token)?;
    ensure_eq!(outputs.len(), 32, "the third run left one file per table");
    ensure_same_rows(&mut got, &fragments, &[])?;
    ensure!(outputs.iter().all(|o| o["source_segments"] == 3), "{outputs:?}");

    // The merged files are retired in D1, not listed, and kept in R2 until the retention.
    let retired = d1(&format!("SELECT count(*) AS n FROM compacted_files WHERE dataset_id = '{dataset}' AND retired_at IS NOT NULL"))?;
    ensure_eq!(retired[0]["n"], 64);
    first_outputs.sort();
    first_outputs.dedup();
    ensure_eq!(first_outputs.len(), 64);
    ensure!(r2_get(&first_outputs[0])?.is_some(), "a retired file stays downloadable from R2 until the clean-up");
    let s = stack();
    let resp = fetch(
        s.http
            .get(format!("{}/api/battle-data/datasets/{dataset}/outputs/download", s.url))
            .query(&[("key", &first_outputs[0])])
            .bearer_auth(&token),
    )?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().map_err(|e| e.to_string())?;
    ensure_eq!(status, 410, "a retired file is no longer served: {body}");
    ensure!(body["error"].as_str().is_some_and(|e| e.contains("list the outputs again")), "{body}");

    let committed = wait_for_events("compaction.committed", &dataset, 3, 30)?;
    ensure_eq!(committed.iter().filter_map(|e| e["metrics"]["consolidated_files"].as_u64()).sum::<u64>(), 64, "{committed:?}");
    let metrics = pg_json(
        &[],
        &format!(
            "SELECT sum(consolidated_files)::int AS files, sum(input_rows - consolidated_rows)::int AS new_rows FROM public.processing_metrics \
         WHERE dataset_id = '{dataset}' AND status = 'success'"
        ),
    )?;
    let uploaded: u64 = fragments.iter().map(|f| f.total_rows()).sum();
    ensure_eq!(metrics, json!([{ "files": 64, "new_rows": uploaded }]));
    let summary = pg_json(&[], &format!("SELECT compacted_file_count FROM public.datasets WHERE id = '{dataset}'"))?;
    ensure_eq!(summary, json!([{ "compacted_file_count": 32 }]));
    Ok(())
}

/// A fragment of the largest size the upload accepts, one table's rows in one segment of one row
/// group: the hardest shape for a Worker's memory. It is stored and compacted like any other.
fn largest_fragment() -> TestResult {
    let (_, token) = new_user(json!({}))?;
    let dataset = unique_dataset();
    let limit = fusou_core::upload::UploadLimits::default().max_fragment_bytes;
    let f = fusou_synth::fragment_of_size(2000, 1, limit - 64 * 1024);
    ensure!(f.bytes.len() as u64 <= limit && f.bytes.len() as u64 > limit * 9 / 10, "{} bytes", f.bytes.len());
    upload(&token, &dataset, "2025-11-12", &f)?;
    wait_until_compacted(&dataset, &token, 300)?;
    let (outputs, mut got) = compacted_rows(&dataset, &token)?;
    let table = f.segments[0].table.as_str();
    let mut expected = rows(&f.segments[0].batch);
    let mut actual = got.remove(table).unwrap_or_default();
    expected.sort();
    actual.sort();
    ensure_eq!(actual.len(), expected.len(), "{table} rows in {} outputs", outputs.len());
    ensure!(actual == expected, "{table}: compacted rows differ from the uploaded ones");
    ensure!(got.is_empty(), "no other table: {:?}", got.keys());
    let run = wait_for_events("compaction.committed", &dataset, 1, 10)?;
    println!("the largest accepted fragment ({} bytes): Wasm memory {:?} bytes after its run", f.bytes.len(), run[0]["wasmMemoryBytes"]);
    Ok(())
}
