//! `fusou compact`: the compaction engine over a folder of fragments written by `fusou gen`,
//! single-threaded, writing the outputs and printing bytes, rows, MB/s and peak memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::{DatasetId, PeriodTag};
use fusou_core::measure;
use fusou_engine::segment::{FragmentInput, Scan};
use fusou_engine::{EngineConfig, binpack, merge};
use parquet::basic::{Compression, ZstdLevel};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A folder written by `fusou gen`.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Output size target, in MiB of input.
    #[arg(long, default_value_t = 128)]
    target_mib: u64,
    /// zstd (level 1, the engine's default), snappy, lz4 or none.
    #[arg(long, default_value = "zstd")]
    codec: String,
}

fn codec(name: &str) -> Result<Compression, String> {
    Ok(match name {
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| e.to_string())?),
        "none" => Compression::UNCOMPRESSED,
        other => return Err(format!("unknown codec {other}: use snappy, lz4, zstd or none")),
    })
}

pub(crate) fn compact(args: Args) -> Result<(), String> {
    let config = EngineConfig { target_file_bytes: args.target_mib << 20, compression: codec(&args.codec)?, ..EngineConfig::default() };
    let dataset = DatasetId::parse("local").expect("valid");
    let period = PeriodTag::parse("0").expect("valid");
    let started = Instant::now();
    let baseline = measure::reset_peak();

    // Pass 1: read each fragment once, keep descriptors only.
    let mut scan = Scan::default();
    // Fragments are memory-mapped: the merge pass slices segments out of the page cache, and
    // the mapped bytes are not heap (the peak figure is the engine's own memory).
    let mut files: Vec<Bytes> = Vec::new();
    for n in 0.. {
        let (bin, offsets_path) = super::fragment_paths(&args.dir, n);
        if !bin.exists() {
            break;
        }
        let offsets: Vec<TableOffset> =
            serde_json::from_str(&std::fs::read_to_string(&offsets_path).map_err(|e| format!("{}: {e}", offsets_path.display()))?)
                .map_err(|e| format!("{}: {e}", offsets_path.display()))?;
        let bytes = map(&bin)?;
        scan.add_fragment(&FragmentInput {
            key: Arc::from(bin.to_string_lossy().as_ref()),
            dataset: dataset.clone(),
            period: period.clone(),
            offsets,
            bytes: bytes.clone(),
            compacted: None,
        });
        files.push(bytes);
    }
    if files.is_empty() {
        return Err(format!("no fragments in {} (write some with `fusou gen`)", args.dir.display()));
    }
    let scanned = started.elapsed();

    // Pass 2: merge output by output, reading each segment back from its fragment file.
    let plans = binpack::plan(&scan, &config);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut bytes_out = 0u64;
    let mut rows_out = 0u64;
    for (n, output) in plans.iter().enumerate() {
        let path = args.out.join(format!("{}-{n:03}.parquet", output.table));
        let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut write_error = None;
        let finished = merge::merge_output(
            output,
            &scan,
            &config,
            |d| Ok(files[d.fragment as usize].slice(d.range())),
            |part| {
                if let Err(e) = std::io::Write::write_all(&mut file, &part) {
                    write_error.get_or_insert(e);
                }
            },
        )
        .map_err(|e| format!("merging {}: {e}", output.table))?;
        if let Some(e) = write_error {
            return Err(format!("{}: {e}", path.display()));
        }
        bytes_out += finished.bytes;
        rows_out += finished.rows;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let input_bytes = scan.bytes();
    println!(
        "fusou compact: {} fragments, {} segments, {} quarantined; {:.1} MB in, {:.1} MB out ({}, ratio {:.2}); {} rows; {} files",
        files.len(),
        scan.segments.len(),
        scan.quarantined.len(),
        input_bytes as f64 / 1e6,
        bytes_out as f64 / 1e6,
        args.codec,
        input_bytes as f64 / bytes_out.max(1) as f64,
        rows_out,
        plans.len(),
    );
    println!(
        "fusou compact: {elapsed:.2} s ({:.2} s scan), {:.1} MB/s, peak heap {:.1} MiB",
        scanned.as_secs_f64(),
        input_bytes as f64 / 1e6 / elapsed,
        (measure::peak() - baseline) as f64 / (1 << 20) as f64
    );
    if rows_out != scan.rows() {
        return Err(format!("rows out {rows_out} differ from rows in {}", scan.rows()));
    }
    Ok(())
}

fn map(path: &Path) -> Result<Bytes, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the fragment files are ours and are not modified while the command runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Bytes::from_owner(map))
}
