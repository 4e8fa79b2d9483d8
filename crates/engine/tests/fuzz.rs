//! The fuzz harness: mutated segments through the upload's check and the compaction engine's
//! read and merge, for `FUSOU_FUZZ_SECONDS` (default 10). It asserts that nothing panics and
//! that no execution's heap grows past [`HEAP_BOUND`], and prints executions per second.
//!
//! Seeds: the client's segments as the client writes them (Snappy), the same rewritten without
//! compression (so that mutations reach page data, not only a Snappy stream), forged files,
//! and the hostile corpus (`tests/hostile/`). A failing input is written beside the test's
//! temporary files and named in the failure; add it to the corpus as `found_<n>.parquet` with
//! its `.reason` once it is refused.
//!
//! Mutations are coverage-blind (bit flips, interesting integers, inserted, deleted and copied
//! bytes, truncations), biased to the footer and the page headers, where sizes are read.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fusou_contract::fragment::{TableOffset, inspect_segment};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_core::measure::{Counting, peak_growth};
use fusou_engine::segment::FragmentInput;
use fusou_engine::{EngineConfig, compact_in_memory};
use fusou_synth::forge::Forge;
use fusou_synth::{self as synth, FragmentSpec, Rng};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Most an execution may grow the heap: far above what honest segments of these sizes need
/// (about 2 MiB), far below a Worker's 128 MB.
const HEAP_BOUND: usize = 64 << 20;

#[global_allocator]
static ALLOCATOR: Counting = Counting::SYSTEM;

fn seeds() -> Vec<Vec<u8>> {
    let fragment = synth::fragment(&FragmentSpec { seed: 11, rows: 1..=40, include_empty_tables: false });
    let mut seeds = Vec::new();
    for segment in fragment.segments.iter().take(12) {
        seeds.push(segment.bytes.clone());
        for dictionary in [false, true] {
            let props = WriterProperties::builder().set_compression(Compression::UNCOMPRESSED).set_dictionary_enabled(dictionary).build();
            let mut out = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut out, segment.batch.schema(), Some(props)).unwrap();
            writer.write(&segment.batch).unwrap();
            writer.close().unwrap();
            seeds.push(out);
        }
    }
    seeds.push(Forge::honest().bytes());
    seeds.push(Forge::nulls_and(9, &[4, 5, 6]).bytes());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") && std::fs::metadata(&path).unwrap().len() < 64 << 10 {
            seeds.push(std::fs::read(path).unwrap());
        }
    }
    seeds
}

const INTERESTING: [u32; 9] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 20];

/// A position, half the time in the last quarter (the footer) or the first 64 bytes (the
/// first page header).
fn position(rng: &mut Rng, len: usize) -> usize {
    let len = len.max(1);
    match rng.range(0..=3) {
        0 => len - 1 - (rng.next_u64() as usize % (len / 4).max(1)),
        1 => rng.next_u64() as usize % len.min(64),
        _ => rng.next_u64() as usize % len,
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.range(1..=4) {
        if b.len() < 16 {
            break;
        }
        let at = position(rng, b.len());
        match rng.range(0..=6) {
            0 => b[at] ^= 1 << rng.range(0..=7),
            1 => b[at] = INTERESTING[rng.range(0..=4) as usize] as u8,
            2 if at + 4 <= b.len() => b[at..at + 4].copy_from_slice(&INTERESTING[rng.range(0..=8) as usize].to_le_bytes()),
            3 => b.insert(at, rng.next_u64() as u8),
            4 => {
                b.remove(at);
            }
            5 => {
                let from = position(rng, b.len());
                let n = (rng.range(1..=16) as usize).min(b.len() - from).min(b.len() - at);
                let chunk = b[from..from + n].to_vec();
                b[at..at + n].copy_from_slice(&chunk);
            }
            _ => b.truncate(at.max(8)),
        }
    }
    // Mostly keep the trailer whole, so that mutants reach the footer's and pages' checks.
    if rng.chance(80) && seed.len() >= 8 && b.len() >= 12 {
        let footer_len = u32::from_le_bytes(seed[seed.len() - 8..seed.len() - 4].try_into().unwrap());
        let delta = b.len() as i64 - seed.len() as i64;
        let n = b.len();
        b[n - 4..].copy_from_slice(b"PAR1");
        if rng.chance(50) {
            b[n - 8..n - 4].copy_from_slice(&((footer_len as i64 + delta.min(0)).max(0) as u32).to_le_bytes());
        }
    }
    b
}

#[derive(Default, Debug)]
struct Tally {
    executions: u64,
    refused: u64,
    quarantined: u64,
    merged: u64,
    peak_growth: usize,
}

/// One execution: the upload's check, then the engine (whatever the check said).
fn execute(bytes: &[u8], tally: &mut Tally) -> Result<(), String> {
    let offset = TableOffset {
        table_name: TableName::parse("battle").unwrap(),
        start_byte: 0,
        byte_length: bytes.len() as u64,
        format: "parquet".into(),
        num_rows: None,
    };
    let (outcome, growth) = peak_growth(|| run_both(bytes, offset));
    let (upload, engine) = outcome?;
    tally.peak_growth = tally.peak_growth.max(growth);
    if growth > HEAP_BOUND {
        return Err(format!("the heap grew {growth} bytes"));
    }
    let quarantined = !engine.scan.quarantined.is_empty() || engine.outputs.iter().any(|(_, _, f)| !f.quarantined.is_empty());
    if upload && quarantined {
        // Accepted at upload, left out by the merge: only for lies in page data.
        tally.quarantined += 1;
    } else if !upload {
        tally.refused += 1;
    } else {
        tally.merged += 1;
    }
    tally.executions += 1;
    Ok(())
}

/// The upload's check (whether it accepts `bytes`) and the engine's outcome.
fn run_both(bytes: &[u8], offset: TableOffset) -> Result<(bool, fusou_engine::Compacted), String> {
    let upload = catch_unwind(AssertUnwindSafe(|| inspect_segment(&offset, Bytes::copy_from_slice(bytes)).is_ok()))
        .map_err(|_| "the upload check panicked".to_owned())?;
    let input = FragmentInput {
        key: "k/fuzz".into(),
        dataset: DatasetId::parse("ds").unwrap(),
        period: PeriodTag::parse("2025-11-05").unwrap(),
        offsets: vec![offset],
        bytes: Bytes::copy_from_slice(bytes),
        compacted: None,
    };
    let engine = catch_unwind(AssertUnwindSafe(|| compact_in_memory(&[input], &EngineConfig::default())))
        .map_err(|_| "the engine panicked".to_owned())?
        .map_err(|e| format!("the engine failed instead of quarantining: {e}"))?;
    Ok((upload, engine))
}

#[test]
fn mutated_segments_never_panic_or_exhaust_memory() {
    let seconds: u64 = std::env::var("FUSOU_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("FUSOU_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut failure = None;
    while started.elapsed() < Duration::from_secs(seconds) {
        let parent = &seeds[rng.next_u64() as usize % seeds.len()];
        let mutant = mutate(&mut rng, parent);
        if let Err(e) = execute(&mutant, &mut tally) {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-found-{}.parquet", tally.executions));
            std::fs::write(&path, &mutant).unwrap();
            failure = Some(format!("{e}: input written to {}", path.display()));
            break;
        }
    }
    let _ = std::panic::take_hook();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} executions in {elapsed:.1} s ({:.0}/s), seed {seed}, {} seeds; {} refused at upload, {} quarantined by the merge, {} merged; \
         peak heap growth {:.1} MiB (bound {} MiB)",
        tally.executions,
        tally.executions as f64 / elapsed,
        seeds.len(),
        tally.refused,
        tally.quarantined,
        tally.merged,
        tally.peak_growth as f64 / (1 << 20) as f64,
        HEAP_BOUND >> 20,
    );
    if let Some(failure) = failure {
        panic!("{failure}");
    }
}
