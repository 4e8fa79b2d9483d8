//! The engine's memory stays bounded however large the input: more than 1 GiB of fragments is
//! scanned, planned and merged while a counting allocator records the peak of live heap bytes.
//! The input itself is a few distinct fragments repeated (their bytes shared), so what the
//! peak measures beyond it is the engine's own memory.

use bytes::Bytes;
use fusou_contract::ids::{DatasetId, PeriodTag};
use fusou_core::measure::{self, Counting};
use fusou_engine::segment::{FragmentInput, Scan};
use fusou_engine::{EngineConfig, binpack, merge};
use fusou_synth::{self as synth, FragmentSpec};

#[global_allocator]
static ALLOCATOR: Counting = Counting::SYSTEM;

const MIB: usize = 1 << 20;
/// The allocator's peak is the process's: the measurements run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// The bound the engine is held to, beyond its input.
const BOUND: usize = 64 * MIB;

#[test]
fn merging_more_than_a_gibibyte_stays_under_64_mib() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let distinct: Vec<synth::Fragment> =
        (0..64).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 20..=200, include_empty_tables: false })).collect();
    let distinct_bytes: usize = distinct.iter().map(|f| f.bytes.len()).sum();
    let copies = (1usize << 30).div_ceil(distinct_bytes) + 1;
    let dataset = DatasetId::parse("ds").unwrap();
    let period = PeriodTag::parse("2025-11-05").unwrap();
    let shared: Vec<Bytes> = distinct.iter().map(|f| Bytes::from(f.bytes.clone())).collect();
    let inputs: Vec<FragmentInput> = (0..copies * distinct.len())
        .map(|i| FragmentInput {
            key: format!("battle_data/ds/port_table/{i:08}.parquet").into(),
            dataset: dataset.clone(),
            period: period.clone(),
            offsets: distinct[i % distinct.len()].offsets.clone(),
            bytes: shared[i % distinct.len()].clone(),
            compacted: None,
        })
        .collect();
    let input_bytes: u64 = inputs.iter().map(|f| f.bytes.len() as u64).sum();
    assert!(input_bytes > 1 << 30, "{input_bytes} bytes of input");
    drop(distinct);

    let baseline = measure::reset_peak();
    let config = EngineConfig::default();
    let mut scan = Scan::default();
    inputs.iter().for_each(|f| scan.add_fragment(f));
    let plans = binpack::plan(&scan, &config);
    let (mut rows_out, mut bytes_out, mut max_parts_held) = (0u64, 0u64, 0usize);
    for output in &plans {
        let finished = merge::merge_output(
            output,
            &scan,
            &config,
            |d| Ok(inputs[d.fragment as usize].bytes.slice(d.range())),
            // A Worker uploads each part and drops it; so does this test.
            |part| {
                bytes_out += part.len() as u64;
                max_parts_held = max_parts_held.max(part.len());
            },
        )
        .unwrap();
        rows_out += finished.rows;
    }
    let peak = measure::peak() - baseline;
    println!(
        "input {:.0} MiB in {} fragments ({} segments) → {} outputs, {:.0} MiB; engine peak {:.1} MiB (descriptors {:.1} MiB)",
        input_bytes as f64 / MIB as f64,
        inputs.len(),
        scan.segments.len(),
        plans.len(),
        bytes_out as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        (scan.segments.capacity() * std::mem::size_of_val(&scan.segments[0])) as f64 / MIB as f64,
    );
    assert_eq!(rows_out, scan.rows(), "every row is written once");
    assert!(max_parts_held <= config.part_bytes);
    assert!(peak < BOUND, "the engine held {peak} bytes at its peak, more than {BOUND}");
}

/// The largest fragment the upload accepts (16 MiB), of one table: a single segment of many
/// rows in one row group. The Worker holds the fragment, and the engine merges it batch by
/// batch; what the engine holds beyond the fragment stays bounded.
#[test]
fn merging_the_largest_accepted_fragment_stays_bounded() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let largest = fusou_core::upload::UploadLimits::default().max_fragment_bytes;
    for tables in [1, 32] {
        let f = synth::fragment_of_size(11, tables, largest);
        let input = FragmentInput {
            key: "battle_data/ds/port_table/00000000.parquet".into(),
            dataset: DatasetId::parse("ds").unwrap(),
            period: PeriodTag::parse("2025-11-05").unwrap(),
            offsets: f.offsets.clone(),
            bytes: Bytes::from(f.bytes.clone()),
            compacted: None,
        };
        drop(f);
        let baseline = measure::reset_peak();
        let config = EngineConfig::default();
        let mut scan = Scan::default();
        scan.add_fragment(&input);
        let mut rows_out = 0;
        for output in &binpack::plan(&scan, &config) {
            rows_out += merge::merge_output(output, &scan, &config, |d| Ok(input.bytes.slice(d.range())), drop).unwrap().rows;
        }
        let peak = measure::peak() - baseline;
        println!(
            "a {:.1} MiB fragment of {tables} table(s): engine peak {:.1} MiB beyond it",
            input.bytes.len() as f64 / MIB as f64,
            peak as f64 / MIB as f64
        );
        assert_eq!(rows_out, scan.rows());
        assert!(scan.quarantined.is_empty());
        // Beside the fragment (which the Worker holds too): under half of a Worker's 64 MiB budget.
        assert!(peak < 32 * MIB, "{tables} table(s): the engine held {peak} bytes beside the fragment");
    }
}
