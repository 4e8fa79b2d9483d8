//! The pipeline's hot code alone in Wasm, run by V8 without the Workers platform around it.
//!
//! - For `scripts/bench-worker.sh` (see `bench-engine-wasm.mjs`): fragments are loaded into Wasm
//!   memory once, then [`Fragments::compact`] runs the engine's two passes (scan, then plan and
//!   merge every output) as `fusou compact` does natively, with the parts counted instead of
//!   written. Its figure, beside the Worker's and the native engine's, splits the Worker's gap
//!   into what Wasm costs and what the platform's I/O costs.
//! - For `scripts/bench-lake-read.sh` (see `bench-rollup-wasm.mjs`): a period's compacted files
//!   loaded into Wasm memory, then [`Period::roll_up`] runs the open tables' roll-up over them as
//!   the compaction Worker does, with the parts counted instead of written: the Wasm memory the
//!   roll-up itself needs, beside the files it reads.
//! - For `scripts/bench-upload.sh` (see `bench-upload-crypto.mjs`): the upload's crypto as the
//!   upload Worker runs it in Wasm ([`content_hash`], [`verify_token`]), to be set beside the
//!   platform's WebCrypto doing the same.

use std::sync::Arc;

use bytes::Bytes;
use fusou_auth::{AuthConfig, JwkSet, verify_user_token};
use fusou_contract::ids::{DatasetId, PeriodTag};
use fusou_core::upload::ContentHash;
use fusou_engine::segment::{FragmentInput, Scan, SegmentDesc};
use fusou_engine::{EngineConfig, binpack, merge};
use wasm_bindgen::prelude::*;

// The compaction Worker's allocator, so that the engine allocates here as it does there.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Fragments held in Wasm memory, as a compaction run holds them.
#[wasm_bindgen]
#[derive(Default)]
pub struct Fragments {
    inputs: Vec<FragmentInput>,
}

#[wasm_bindgen]
impl Fragments {
    /// No fragments yet.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one fragment: its bytes and its offsets (the JSON `fusou gen` writes beside it).
    pub fn add(&mut self, offsets_json: &str, bytes: &[u8]) -> Result<(), String> {
        let offsets = serde_json::from_str(offsets_json).map_err(|e| format!("offsets: {e}"))?;
        self.inputs.push(FragmentInput {
            key: Arc::from(format!("{:06}", self.inputs.len()).as_str()),
            dataset: DatasetId::parse("local").expect("valid"),
            period: PeriodTag::parse("0").expect("valid"),
            offsets,
            bytes: Bytes::copy_from_slice(bytes),
            compacted: None,
        });
        Ok(())
    }

    /// Input bytes.
    pub fn bytes(&self) -> f64 {
        self.inputs.iter().map(|f| f.bytes.len() as f64).sum()
    }

    /// Scans, plans and merges every output; answers the output bytes. Fails if a row is lost.
    pub fn compact(&self) -> Result<f64, String> {
        let config = EngineConfig::default();
        let mut scan = Scan::default();
        for input in &self.inputs {
            scan.add_fragment(input);
        }
        let (mut bytes, mut rows) = (0u64, 0u64);
        for output in binpack::plan(&scan, &config) {
            let read = |d: &SegmentDesc| Ok(self.inputs[d.fragment as usize].bytes.slice(d.range()));
            let finished =
                merge::merge_output(&output, &scan, &config, read, |part| bytes += part.len() as u64).map_err(|e| e.to_string())?;
            rows += finished.rows;
        }
        if rows != scan.rows() {
            return Err(format!("rows out {rows} differ from rows in {}", scan.rows()));
        }
        Ok(bytes as f64)
    }

    /// The size of this module's Wasm memory (it never shrinks: the peak so far).
    pub fn memory_bytes() -> f64 {
        fusou_core::measure::wasm_memory_bytes() as f64
    }
}

/// One table's compacted files of one period, as a roll-up reads them.
#[wasm_bindgen]
#[derive(Default)]
pub struct Period {
    files: Vec<fusou_engine::rollup::RollupFile>,
}

#[wasm_bindgen]
impl Period {
    /// No files yet.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one compacted file of `dataset` (files are added in dataset order, oldest first).
    pub fn add(&mut self, dataset: &str, bytes: &[u8]) -> Result<(), String> {
        let bytes = Bytes::copy_from_slice(bytes);
        let footer = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&bytes).map_err(|e| e.to_string())?;
        let rows = footer.file_metadata().num_rows() as u64;
        let dataset = DatasetId::parse(dataset).map_err(|e| e.to_string())?;
        self.files.push(fusou_engine::rollup::RollupFile { dataset, bytes, rows, source_segments: 1 });
        Ok(())
    }

    /// Input bytes.
    pub fn bytes(&self) -> f64 {
        self.files.iter().map(|f| f.bytes.len() as f64).sum()
    }

    /// Rolls the files up as the compaction Worker's job does (outputs of `target_mb`, rows of
    /// a small dataset sorted by `order`, if not empty); answers the output bytes. Fails if a
    /// row is lost.
    pub fn roll_up(&self, table: &str, order: &str, target_mb: u32) -> Result<f64, String> {
        use fusou_engine::rollup::{RollupConfig, roll_up_in_memory};
        let engine = EngineConfig { target_file_bytes: (target_mb as u64) << 20, row_group_bytes: 1 << 20, ..EngineConfig::default() };
        let table = fusou_contract::ids::TableName::parse(table).map_err(|e| e.to_string())?;
        let period = PeriodTag::parse("0").expect("valid");
        let order = Some(order).filter(|o| !o.is_empty());
        let mut bytes = 0u64;
        let outputs =
            roll_up_in_memory(&period, &table, &self.files, order, &engine, &RollupConfig::default(), |_, part| bytes += part.len() as u64)
                .map_err(|e| e.to_string())?;
        let rows: u64 = outputs.iter().map(|o| o.rows).sum();
        let expected: u64 = self.files.iter().map(|f| f.rows).sum();
        if rows != expected {
            return Err(format!("rows out {rows} differ from rows in {expected}"));
        }
        Ok(bytes as f64)
    }
}

/// The body's SHA-256 as the upload Worker computes it (lowercase hex).
#[wasm_bindgen]
pub fn content_hash(bytes: &[u8]) -> String {
    ContentHash::of(bytes).as_str().to_owned()
}

/// Verifies a user token `times` times as the upload Worker does (the JWK set parsed once, the
/// token's header, key, signature and claims each time); answers the user id.
#[wasm_bindgen]
pub fn verify_token(token: &str, jwks_json: &str, issuer: &str, now: f64, times: u32) -> Result<String, String> {
    let jwks: JwkSet = serde_json::from_str(jwks_json).map_err(|e| format!("JWK set: {e}"))?;
    let config = AuthConfig { issuer: issuer.to_owned(), jwks, legacy_hs256_secret: None };
    let mut user = String::new();
    for _ in 0..times {
        user = verify_user_token(token, &config, now as u64).map_err(|e| e.to_string())?.id.to_string();
    }
    Ok(user)
}
