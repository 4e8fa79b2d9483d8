//! The compaction engine: fragments in, large valid Parquet files out, with bounded memory.
//!
//! It owns the format of the compacted files and the memory bound of producing them. It does no
//! I/O and knows no platform type, no SQL and no table format: the Worker and the native
//! `fusou compact` command hand it bytes and take its parts. The stages are separate so that each can be tested and bounded on its own:
//!
//! 1. [`segment`]: a fragment, read whole (one GET), is cut into its per-table segments by
//!    `table_offsets`; each segment's schema is read from its footer (decoded only when the
//!    footer does not begin with the bytes of its table's last schema), and its row count taken
//!    from the offsets (the whole footer is decoded when they have none). A segment that is not valid
//!    Parquet is *quarantined* with an error naming its fragment and table, here or when the
//!    merge decodes it (a wrong row count included); the others go on.
//! 2. [`evolution`]: each segment's Arrow schema gets a stable fingerprint. Segments are grouped per
//!    (dataset, period, table); within a table, schemas that differ only by extra nullable
//!    columns merge under one superset schema (missing columns become nulls). A column name seen
//!    with two types splits the table into separate outputs; it never blocks the rest.
//! 3. [`binpack`]: per group, inputs are bin-packed into outputs of at most
//!    [`EngineConfig::target_file_bytes`], with caps on inputs and bytes per bin so that one
//!    bin's work is bounded. Pure and deterministic: the same inputs give the same plan.
//! 4. [`merge`]: a bin's segments are decoded, aligned to the superset schema and re-encoded by
//!    `ArrowWriter` into large row groups, into a [`sink::PartSink`] that hands out fixed-size
//!    parts (≥ 5 MiB, all equal but the last, as R2 multipart upload requires) as they fill.
//!    Consecutive segments of one schema are decoded by one reader, as the row groups of one
//!    stitched file (`stitch`), about a write batch of rows at a time: a reader per ~20-row
//!    segment would build its column readers and a batch for those few rows.
//!
//! 5. [`stats`]: the finished file's per-column counts and bounds, read off the footer the
//!    writer returns, for the table's manifests.
//!
//! [`rollup`] reuses the merge for the open tables' period roll-ups: a table's compacted files
//! of one period, across datasets, into a few outputs of whole datasets in order.
//!
//! Every output carries key-value metadata: `fusou.source_segments`, `fusou.schema_fingerprint`
//! and `fusou.engine_version`; its row count equals the sum of its inputs'.
//!
//! # Memory usage
//!
//! A merge holds: the run of segments being decoded (about a write batch of rows, at most 256
//! segments) and their footers, the writer's in-progress row group (flushed once it reaches
//! [`EngineConfig::row_group_bytes`]), the batches waiting to be written
//! ([`EngineConfig::write_batch_rows`]) and at most one filling part plus the parts not yet
//! taken by the caller. None of these grows with the input's size;
//! `tests/memory_bound.rs` checks it with a counting allocator over more than 1 GiB of input.
//! A compacted file merged again (consolidation) is an input of one large segment: it is
//! decoded batch by batch ([`merge::Merger::push_compacted`]), never whole.
//!
//! # Failure modes
//!
//! The engine does no I/O and changes nothing: a failed merge leaves nothing to undo but the
//! parts already handed out, which the caller's multipart upload aborts.

pub mod binpack;
pub mod evolution;
pub mod merge;
pub mod rollup;
pub mod segment;
pub mod sink;
pub mod stats;
mod stitch;

use parquet::basic::{Compression, ZstdLevel};

/// The engine's version, written into every output.
pub const ENGINE_VERSION: &str = concat!("fusou-engine/", env!("CARGO_PKG_VERSION"));

/// How the engine sizes its outputs and bounds its memory.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Outputs are packed up to this many input bytes (default 128 MiB).
    pub target_file_bytes: u64,
    /// At most this many segments in one output, bounding one bin's work (default 50,000).
    pub max_inputs_per_bin: usize,
    /// A group's last bin smaller than this joins the previous bin, if that bin then stays
    /// within `target_file_bytes * 1.25`: no tiny tail file (default 8 MiB).
    pub min_tail_bytes: u64,
    /// The writer flushes a row group once its encoded size reaches this (default 16 MiB).
    pub row_group_bytes: usize,
    /// Decoded rows are gathered into batches of this many rows before encoding (default 1024:
    /// writing each ~20-row segment on its own is 2.5 times slower; past 1,024 rows larger
    /// batches only cost memory, measured with `scripts/bench-engine.sh`: 1,024 rows 110–117
    /// MB/s and 32.6 MiB peak, 8,192 rows 106 MB/s and 43.7 MiB).
    pub write_batch_rows: usize,
    /// Size of each multipart part (default 8 MiB; R2 needs at least 5 MiB).
    pub part_bytes: usize,
    /// Default ZSTD level 1, chosen by measurement (`scripts/bench-engine.sh`, 2,000 client-shaped
    /// fragments, 413 MB): outputs 36% smaller than SNAPPY (87 MB against 136 MB) for about 6%
    /// less throughput, because the cost is per segment, not per byte. Outputs are kept and
    /// downloaded for good, so bytes matter more than that 6%.
    pub compression: Compression,
}

/// R2's smallest part (all but the last).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            target_file_bytes: 128 << 20,
            max_inputs_per_bin: 50_000,
            min_tail_bytes: 8 << 20,
            row_group_bytes: 16 << 20,
            write_batch_rows: 1024,
            part_bytes: 8 << 20,
            compression: Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")),
        }
    }
}

/// Why the engine failed (a quarantined segment is not a failure: see [`segment::Quarantined`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("parquet: {0}")]
    /// The parquet crate failed to read or write.
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    /// Arrow failed to align or convert a batch.
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("invalid configuration: {0}")]
    /// A setting the engine cannot work with.
    Config(String),
    #[error("rows out ({out}) differ from rows in ({expected})")]
    /// An output holds another number of rows than its inputs declared.
    RowCountMismatch {
        /// The rows its inputs declared.
        expected: u64,
        /// The rows it holds.
        out: u64,
    },
}

/// Everything one compaction of a set of fragments produced, for tools and tests.
pub struct Compacted {
    /// Each output: its plan, its bytes and what the merge reports.
    pub outputs: Vec<(binpack::OutputPlan, bytes::Bytes, merge::Finished)>,
    /// The scan of the inputs.
    pub scan: segment::Scan,
}

/// Scans, plans and merges fragments held in memory, collecting each output whole. The Worker
/// and `fusou compact` drive the same stages, streaming parts out instead.
pub fn compact_in_memory(fragments: &[segment::FragmentInput], config: &EngineConfig) -> Result<Compacted, EngineError> {
    let mut scan = segment::Scan::default();
    fragments.iter().for_each(|f| scan.add_fragment(f));
    let mut outputs = Vec::new();
    for output in binpack::plan(&scan, config) {
        let mut whole = bytes::BytesMut::new();
        let finished = merge::merge_output(
            &output,
            &scan,
            config,
            |d| Ok(fragments[d.fragment as usize].bytes.slice(d.range())),
            |part| whole.extend_from_slice(&part),
        )?;
        outputs.push((output, whole.freeze(), finished));
    }
    Ok(Compacted { outputs, scan })
}
