//! `fusou load --verify`: wait until compaction has taken every uploaded fragment, download
//! every compacted output, and check that each table holds exactly the uploaded rows: the same
//! count and the same order-independent digest of row values (a missing or duplicated row
//! changes both the count and the digest).

use std::collections::{BTreeMap, hash_map::DefaultHasher};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use arrow_array::{Array, BooleanArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Per table: rows, and the wrapping sum of each row's hash (order-independent).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Digest(BTreeMap<String, (u64, u64)>);

fn cell(batch: &RecordBatch, name: &str, row: usize, h: &mut DefaultHasher) {
    name.hash(h);
    let Some(col) = batch.column_by_name(name) else { return };
    if col.is_null(row) {
        return 0u8.hash(h);
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        a.value(row).hash(h)
    } else if let Some(a) = any.downcast_ref::<Int32Array>() {
        a.value(row).hash(h)
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        a.value(row).hash(h)
    } else if let Some(a) = any.downcast_ref::<Float32Array>() {
        a.value(row).to_bits().hash(h)
    } else if let Some(a) = any.downcast_ref::<BooleanArray>() {
        a.value(row).hash(h)
    }
}

impl Digest {
    pub(crate) fn add_batch(&mut self, table: &str, batch: &RecordBatch) {
        let schema = batch.schema();
        let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        names.sort_unstable();
        let entry = self.0.entry(table.to_owned()).or_default();
        for row in 0..batch.num_rows() {
            let mut h = DefaultHasher::new();
            for name in &names {
                cell(batch, name, row, &mut h);
            }
            entry.0 += 1;
            entry.1 = entry.1.wrapping_add(h.finish());
        }
    }
}

pub(crate) async fn verify(url: &str, token: &str, datasets: &[String], expected: &Digest, timeout: Duration) -> Result<(), String> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    eprintln!("waiting for compaction of {} datasets…", datasets.len());
    for d in datasets {
        loop {
            let resp = http.get(format!("{url}/api/battle-data/datasets/{d}")).bearer_auth(token).send().await;
            let state = super::json_answer(resp, "status").await?;
            if state["pending"]["fragments"] == 0 && state["compaction"]["inProgress"] == false {
                break;
            }
            if started.elapsed() > timeout {
                return Err(format!("{d} still has work pending after {} s: {}", timeout.as_secs(), state["pending"]));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let waited = started.elapsed();
    let mut got = Digest::default();
    let mut files = 0;
    for d in datasets {
        super::each_output(&http, url, d, token, |output, file| {
            let key = output["key"].as_str().unwrap_or_default();
            let table = output["table_name"].as_str().ok_or("an output without a table")?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|e| format!("{key} is not readable Parquet: {e}"))?;
            for batch in reader {
                got.add_batch(table, &batch.map_err(|e| format!("{key}: {e}"))?);
            }
            files += 1;
            Ok(())
        })
        .await?;
    }
    let rows = |d: &Digest| d.0.values().map(|v| v.0).sum::<u64>();
    println!(
        "verify: compaction done {:.1} s after the uploads; {files} compacted files; {} rows uploaded, {} rows compacted",
        waited.as_secs_f64(),
        rows(expected),
        rows(&got)
    );
    let mut problems = Vec::new();
    for table in expected.0.keys().chain(got.0.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (e, g) = (expected.0.get(table).copied().unwrap_or_default(), got.0.get(table).copied().unwrap_or_default());
        if e != g {
            problems.push(format!(
                "{table}: uploaded {} rows, compacted {} rows{}",
                e.0,
                g.0,
                if e.0 == g.0 { " (values differ)" } else { "" }
            ));
        }
    }
    if problems.is_empty() {
        println!("verify: every uploaded row is in the compacted outputs exactly once (0 lost, 0 duplicated)");
        Ok(())
    } else {
        Err(format!("compacted data differs from the uploads:\n  {}", problems.join("\n  ")))
    }
}
