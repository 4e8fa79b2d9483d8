//! The compaction engine end to end in memory: outputs read back with the parquet crate and
//! compared by value with the inputs.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_engine::merge::{META_ENGINE_VERSION, META_FINGERPRINT, META_SOURCE_SEGMENTS};
use fusou_engine::segment::FragmentInput;
use fusou_engine::{ENGINE_VERSION, EngineConfig, compact_in_memory};
use fusou_synth::{self as synth, FragmentSpec, write_segment};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn input(key: &str, dataset: &str, period: &str, f: &synth::Fragment) -> FragmentInput {
    FragmentInput {
        key: key.into(),
        dataset: DatasetId::parse(dataset).unwrap(),
        period: PeriodTag::parse(period).unwrap(),
        offsets: f.offsets.clone(),
        bytes: Bytes::from(f.bytes.clone()),
        compacted: None,
    }
}

/// A fragment of the given (table, batch) segments.
fn custom(segments: &[(&str, RecordBatch)]) -> synth::Fragment {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    let mut segs = Vec::new();
    for (table, batch) in segments {
        let data = write_segment(batch);
        offsets.push(TableOffset {
            table_name: TableName::parse(table).unwrap(),
            start_byte: bytes.len() as u64,
            byte_length: data.len() as u64,
            format: "parquet".into(),
            num_rows: Some(batch.num_rows() as u64),
        });
        bytes.extend_from_slice(&data);
        segs.push(synth::Segment { table: TableName::parse(table).unwrap(), batch: batch.clone(), bytes: data });
    }
    synth::Fragment { bytes, offsets, segments: segs }
}

/// Every row of a Parquet file, in one batch, with its key-value metadata.
fn read_back(file: &Bytes) -> (RecordBatch, Vec<(String, String)>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.clone()).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| kv.iter().map(|k| (k.key.clone(), k.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    (arrow_select::concat::concat_batches(&schema, &batches).unwrap(), kv)
}

fn assert_same_values(got: &RecordBatch, expected: &RecordBatch) {
    assert_eq!(got.num_rows(), expected.num_rows());
    for field in expected.schema().fields() {
        let g = got.column_by_name(field.name()).unwrap_or_else(|| panic!("column {} missing", field.name()));
        let e = expected.column_by_name(field.name()).unwrap();
        assert_eq!(g.to_data(), e.to_data(), "column {}", field.name());
    }
}

#[test]
fn every_row_comes_back_with_its_values() {
    let fragments: Vec<synth::Fragment> =
        (0..25).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 1..=30, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> =
        fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i:03}"), "ds", "2025-11-05", f)).collect();
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    assert!(result.scan.quarantined.is_empty());
    assert_eq!(result.outputs.len(), 32, "one output per table");
    for (plan, file, finished) in &result.outputs {
        let expected_batches: Vec<RecordBatch> =
            fragments.iter().map(|f| f.segments.iter().find(|s| s.table == plan.table).unwrap().batch.clone()).collect();
        let expected = arrow_select::concat::concat_batches(&expected_batches[0].schema(), &expected_batches).unwrap();
        let (got, kv) = read_back(file);
        assert_same_values(&got, &expected);
        assert_eq!(finished.rows, expected.num_rows() as u64);
        let kv: std::collections::HashMap<_, _> = kv.into_iter().collect();
        assert_eq!(kv[META_SOURCE_SEGMENTS], "25");
        assert_eq!(kv[META_FINGERPRINT], plan.fingerprint.as_str());
        assert_eq!(kv[META_ENGINE_VERSION], ENGINE_VERSION);
        assert_eq!(finished.row_groups, 1, "small inputs make one large row group");
    }
}

#[test]
fn strings_are_written_plain_and_numbers_with_a_dictionary() {
    let fragments: Vec<synth::Fragment> =
        (0..5).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 5..=20, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "2025-11-05", f)).collect();
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let (mut strings, mut numbers) = (0, 0);
    for (_, file, _) in &result.outputs {
        let reader = parquet::file::reader::SerializedFileReader::new(file.clone()).unwrap();
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        for chunk in metadata.row_groups().iter().flat_map(|g| g.columns()) {
            let dictionary = chunk.dictionary_page_offset().is_some();
            match chunk.column_type() {
                // The period and dataset columns: one value per file, kept as a dictionary.
                parquet::basic::Type::BYTE_ARRAY if ["period_tag", "dataset_id"].contains(&chunk.column_path().string().as_str()) => {
                    assert!(dictionary, "{} has no dictionary", chunk.column_path());
                }
                parquet::basic::Type::BYTE_ARRAY => {
                    strings += 1;
                    assert!(!dictionary, "{} has a dictionary", chunk.column_path());
                }
                _ => {
                    numbers += 1;
                    assert!(dictionary, "{} has no dictionary", chunk.column_path());
                }
            }
        }
    }
    assert!(strings > 32 && numbers > 32, "{strings} string and {numbers} numeric column chunks");
}

fn battle(columns: &[(&str, ArrayRef)]) -> RecordBatch {
    let schema = Schema::new(columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>());
    RecordBatch::try_new(Arc::new(schema), columns.iter().map(|(_, a)| a.clone()).collect()).unwrap()
}

#[test]
fn added_columns_merge_and_conflicting_types_split() {
    let ints = |v: &[i32]| Arc::new(Int32Array::from(v.to_vec())) as ArrayRef;
    let texts = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let old = battle(&[("a", ints(&[1, 2])), ("b", texts(&["x", "y"]))]);
    let new = battle(&[("a", ints(&[3])), ("b", texts(&["z"])), ("c", Arc::new(Int64Array::from(vec![9i64])) as ArrayRef)]);
    let clash = battle(&[("a", texts(&["not a number"]))]);
    let inputs = vec![
        input("k/1", "ds", "p", &custom(&[("battle", old)])),
        input("k/2", "ds", "p", &custom(&[("battle", new)])),
        input("k/3", "ds", "p", &custom(&[("battle", clash)])),
    ];
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    assert_eq!(result.outputs.len(), 2, "the type clash gets its own output");
    let (merged, _) = result.outputs.iter().map(|(_, f, _)| read_back(f)).find(|(b, _)| b.num_rows() == 3).unwrap();
    let names = ["a", "b", "c", "period_tag", "dataset_id"];
    assert_eq!(merged.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), names);
    let a = merged.column_by_name("a").unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(a.values().to_vec(), vec![1, 2, 3]);
    let c = merged.column_by_name("c").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!((c.is_null(0), c.is_null(1), c.value(2)), (true, true, 9), "old rows get nulls");
    let (apart, _) = result.outputs.iter().map(|(_, f, _)| read_back(f)).find(|(b, _)| b.num_rows() == 1).unwrap();
    assert_eq!(apart.column(0).data_type(), &DataType::Utf8);
}

#[test]
fn datasets_and_periods_never_share_a_file() {
    let f = synth::fragment(&FragmentSpec::default());
    let inputs =
        vec![input("k/1", "ds-a", "2025-11-05", &f), input("k/2", "ds-a", "2025-11-06", &f), input("k/3", "ds-b", "2025-11-05", &f)];
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    assert_eq!(result.outputs.len(), 3 * 32);
    for (plan, _, finished) in &result.outputs {
        let seg = f.segments.iter().find(|s| s.table == plan.table).unwrap();
        assert_eq!(finished.rows, seg.batch.num_rows() as u64, "{} {} {}", plan.dataset, plan.period, plan.table);
    }
}

#[test]
fn zero_row_segments_are_consumed_without_an_output() {
    let fragments: Vec<synth::Fragment> =
        (0..6).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 0..=2, include_empty_tables: true })).collect();
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "p", f)).collect();
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let rows_in: u64 = fragments.iter().map(|f| f.total_rows()).sum();
    let rows_out: u64 = result.outputs.iter().map(|(_, _, f)| f.rows).sum();
    assert_eq!(rows_out, rows_in);
    assert_eq!(result.scan.segments.len(), 6 * 32, "empty segments are scanned");
    assert!(result.outputs.iter().all(|(_, _, f)| f.rows > 0), "no empty output files");
}

#[test]
fn a_corrupt_segment_is_quarantined_and_the_rest_compacted() {
    let fragments: Vec<synth::Fragment> = (0..5).map(|seed| synth::fragment(&FragmentSpec { seed, ..FragmentSpec::default() })).collect();
    let mut inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "p", f)).collect();
    // Damage the end of the footer of one segment of fragments 2 and 4, keeping the schema and
    // the magic bytes.
    for i in [2, 4] {
        let victim = fragments[i].offsets.iter().find(|o| o.table_name.as_str() == "hougeki").unwrap().clone();
        let mut bytes = fragments[i].bytes.clone();
        let footer_len_at = (victim.end() - 8) as usize;
        bytes[footer_len_at - 16..footer_len_at].fill(0xAB);
        inputs[i].bytes = Bytes::from(bytes);
    }
    // Fragment 4 comes from an older client, without row counts; fragment 2 has them. Either
    // way the scan walks every uploaded segment's footer (the segment guard) and finds it.
    inputs[4].offsets.iter_mut().for_each(|o| o.num_rows = None);
    // And give fragment 3 offsets that do not fit it.
    inputs[3].offsets[0].byte_length = 1 << 30;

    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let q = &result.scan.quarantined;
    assert_eq!(q.len(), 3, "{q:?}");
    for k in ["k/2", "k/4"] {
        assert!(q.iter().any(|q| q.fragment_key == k && q.table == "hougeki" && q.error.contains("hougeki")), "{q:?}");
    }
    assert!(q.iter().any(|q| q.fragment_key == "k/3" && q.table == "*"), "{q:?}");
    assert!(result.outputs.iter().all(|(_, _, f)| f.quarantined.is_empty()), "nothing left for the merge to find");
    let rows_out: u64 = result.outputs.iter().map(|(_, _, f)| f.rows).sum();
    let hougeki = |i: usize| fragments[i].segments.iter().find(|s| s.table.as_str() == "hougeki").unwrap().batch.num_rows() as u64;
    let rows_in: u64 = [0, 1, 2, 4].iter().map(|&i| fragments[i].total_rows()).sum();
    assert_eq!(rows_out, rows_in - hougeki(2) - hougeki(4));
}

#[test]
fn a_segment_whose_footer_disowns_its_declared_rows_is_quarantined() {
    // The scan holds every segment's declared row count to its footer.
    let fragments: Vec<synth::Fragment> = (0..3).map(|seed| synth::fragment(&FragmentSpec { seed, ..FragmentSpec::default() })).collect();
    let mut inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "p", f)).collect();
    let lie = inputs[1].offsets.iter_mut().find(|o| o.table_name.as_str() == "battle").unwrap();
    lie.num_rows = lie.num_rows.map(|n| n + 1);
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let q = &result.scan.quarantined;
    assert!(q.len() == 1 && q[0].fragment_key == "k/1" && q[0].table == "battle" && q[0].error.contains("declares"), "{q:?}");
    let (_, file, _) = result.outputs.iter().find(|(p, _, _)| p.table.as_str() == "battle").unwrap();
    let kept: Vec<RecordBatch> =
        [0, 2].iter().map(|&i| fragments[i].segments.iter().find(|s| s.table.as_str() == "battle").unwrap().batch.clone()).collect();
    assert_same_values(&read_back(file).0, &arrow_select::concat::concat_batches(&kept[0].schema(), &kept).unwrap());
}

#[test]
fn a_segment_whose_pages_do_not_decode_costs_only_itself() {
    // A table's segments are decoded many at a time: one bad segment among them must leave
    // out its own rows and no other, whichever run it falls in.
    let mut fragments: Vec<synth::Fragment> =
        (0..12).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 1..=30, include_empty_tables: false })).collect();
    fragments[5].garble_first_page("hougeki");
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i:02}"), "ds", "p", f)).collect();
    let config = EngineConfig { write_batch_rows: 64, ..EngineConfig::default() };
    let result = compact_in_memory(&inputs, &config).unwrap();
    assert!(result.scan.quarantined.is_empty(), "its footer is valid: the scan keeps it");
    for (plan, file, finished) in &result.outputs {
        let bad = plan.table.as_str() == "hougeki";
        let kept: Vec<RecordBatch> = fragments
            .iter()
            .enumerate()
            .filter(|(i, _)| !(bad && *i == 5))
            .map(|(_, f)| f.segments.iter().find(|s| s.table == plan.table).unwrap().batch.clone())
            .collect();
        let (got, kv) = read_back(file);
        assert_same_values(&got, &arrow_select::concat::concat_batches(&kept[0].schema(), &kept).unwrap());
        let quarantined: Vec<u32> = finished.quarantined.iter().map(|(d, _)| d.fragment).collect();
        assert_eq!(quarantined, if bad { vec![5] } else { vec![] }, "{}", plan.table);
        let sources: std::collections::HashMap<_, _> = kv.into_iter().collect();
        assert_eq!(sources[META_SOURCE_SEGMENTS], kept.len().to_string());
    }
}

#[test]
fn outputs_stream_in_equal_parts() {
    let fragments: Vec<synth::Fragment> =
        (0..60).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 200..=400, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i:03}"), "ds", "p", f)).collect();
    let config = EngineConfig { part_bytes: 64 * 1024, row_group_bytes: 256 * 1024, write_batch_rows: 1024, ..EngineConfig::default() };
    let mut scan = fusou_engine::segment::Scan::default();
    inputs.iter().for_each(|f| scan.add_fragment(f));
    let plans = fusou_engine::binpack::plan(&scan, &config);
    let biggest = plans.iter().max_by_key(|p| p.input_bytes).unwrap();
    let mut parts = Vec::new();
    let finished = fusou_engine::merge::merge_output(
        biggest,
        &scan,
        &config,
        |d| Ok(inputs[d.fragment as usize].bytes.slice(d.range())),
        |p| parts.push(p),
    )
    .unwrap();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let (last, full) = parts.split_last().unwrap();
    assert!(full.iter().all(|p| p.len() == 64 * 1024));
    assert!(last.len() <= 64 * 1024 && !last.is_empty());
    assert!(finished.row_groups > 1, "row groups are cut by bytes");
    let whole: Bytes = parts.iter().flat_map(|p| p.to_vec()).collect::<Vec<u8>>().into();
    assert_eq!(read_back(&whole).0.num_rows() as u64, biggest.input_rows);
}

#[test]
fn a_compacted_file_merged_again_keeps_every_row_and_counts_its_sources() {
    let fragments: Vec<synth::Fragment> =
        (0..6).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 1..=30, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> = fragments[..4].iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "p", f)).collect();
    // Tiny row groups, so the compacted file is read back across several of them.
    let small_groups = EngineConfig { row_group_bytes: 1, write_batch_rows: 7, ..EngineConfig::default() };
    let first = compact_in_memory(&inputs, &small_groups).unwrap();
    let (plan, file, finished) = first.outputs.iter().find(|(p, _, _)| p.table.as_str() == "battle").unwrap();
    assert!(finished.row_groups > 1, "{} row groups", finished.row_groups);

    let table = TableName::parse("battle").unwrap();
    let compacted = FragmentInput::compacted_file("c/0", plan.dataset.clone(), plan.period.clone(), table.clone(), file.clone(), 4);
    let mut again = vec![compacted];
    again.extend(fragments[4..].iter().enumerate().map(|(i, f)| input(&format!("k/{}", i + 4), "ds", "p", f)));
    let result = compact_in_memory(&again, &EngineConfig::default()).unwrap();
    let (_, file, finished) = result.outputs.iter().find(|(p, _, _)| p.table == table).unwrap();
    let expected: Vec<RecordBatch> =
        fragments.iter().map(|f| f.segments.iter().find(|s| s.table == table).unwrap().batch.clone()).collect();
    let expected = arrow_select::concat::concat_batches(&expected[0].schema(), &expected).unwrap();
    let (got, kv) = read_back(file);
    assert_same_values(&got, &expected);
    assert_eq!(finished.source_segments, 6, "four in the compacted file, two fragments");
    assert_eq!(kv.iter().find(|(k, _)| k == META_SOURCE_SEGMENTS).map(|(_, v)| v.as_str()), Some("6"));
}

#[test]
fn a_compacted_file_that_does_not_decode_fails_the_merge() {
    let fragments: Vec<synth::Fragment> =
        (0..2).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 10..=20, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "p", f)).collect();
    let first = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let (plan, file, _) = first.outputs.iter().find(|(p, _, _)| p.table.as_str() == "battle").unwrap();
    // Garble the first data page's bytes, keeping the footer: the scan passes, decoding fails.
    let mut garbled = file.to_vec();
    for b in &mut garbled[4..64] {
        *b = 0xFF;
    }
    let compacted =
        FragmentInput::compacted_file("c/0", plan.dataset.clone(), plan.period.clone(), plan.table.clone(), Bytes::from(garbled), 2);
    let error = compact_in_memory(&[compacted], &EngineConfig::default()).err().expect("a merge error, not a quarantine");
    assert!(!error.to_string().is_empty());
}

#[test]
fn a_segment_of_many_rows_comes_back_whole_and_a_broken_one_costs_only_itself() {
    // Segments of more than four write batches of rows are decoded batch by batch.
    let big = synth::fragment_of_size(7, 1, 2 << 20);
    let table = big.segments[0].table.clone();
    assert!(big.segments[0].batch.num_rows() > 4 * 1024, "{} rows", big.segments[0].batch.num_rows());
    let small = synth::fragment(&FragmentSpec { seed: 8, rows: 1..=30, include_empty_tables: false });
    let mut broken = synth::fragment_of_size(9, 1, 2 << 20);
    broken.garble_first_page(table.as_str());
    let inputs = [input("k/0", "ds", "p", &small), input("k/1", "ds", "p", &big), input("k/2", "ds", "p", &broken)];
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    let (_, file, finished) = result.outputs.iter().find(|(plan, _, _)| plan.table == table).unwrap();
    assert_eq!(finished.quarantined.iter().map(|(d, _)| d.fragment).collect::<Vec<_>>(), [2], "the broken one, before any of its rows");
    let kept: Vec<RecordBatch> =
        [&small, &big].iter().map(|f| f.segments.iter().find(|s| s.table == table).unwrap().batch.clone()).collect();
    assert_same_values(&read_back(file).0, &arrow_select::concat::concat_batches(&kept[0].schema(), &kept).unwrap());
}

/// A value of a column as the statistics bound it (`None`: null).
fn bound_of(column: &ArrayRef, i: usize) -> Option<fusou_engine::stats::Bound> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};
    use fusou_engine::stats::Bound;
    if column.is_null(i) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Int64 => Bound::Int(column.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Bound::Int(column.as_primitive::<Int32Type>().value(i).into()),
        DataType::Float64 => Bound::Float(column.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => Bound::Bool(column.as_boolean().value(i)),
        DataType::Utf8 => Bound::Text(column.as_string::<i32>().value(i).to_owned()),
        other => panic!("the client writes no {other}"),
    })
}

#[test]
fn statistics_bound_every_value_and_count_every_null() {
    use fusou_engine::stats::{Bound, TRUNCATE_CHARS};
    let fragments: Vec<synth::Fragment> =
        (0..40).map(|seed| synth::fragment(&FragmentSpec { seed, rows: 1..=40, include_empty_tables: false })).collect();
    let inputs: Vec<FragmentInput> = fragments.iter().enumerate().map(|(i, f)| input(&format!("k/{i}"), "ds", "2025-11-05", f)).collect();
    // Small row groups, so that the bounds are folded over several.
    let config = EngineConfig { row_group_bytes: 1, write_batch_rows: 64, ..EngineConfig::default() };
    let result = compact_in_memory(&inputs, &config).unwrap();
    let (mut folded, mut bounded, mut truncated) = (0, 0, 0);
    for (plan, file, finished) in &result.outputs {
        let (got, _) = read_back(file);
        assert_eq!(finished.statistics.len(), got.num_columns(), "{}", plan.table);
        folded += usize::from(finished.row_groups > 1);
        for (column, stats) in got.columns().iter().zip(&finished.statistics) {
            let what = format!("{}.{}", plan.table, stats.name);
            assert_eq!((stats.values, stats.nulls), (got.num_rows() as u64, column.null_count() as u64), "{what}");
            assert!(stats.bytes > 0, "{what}");
            let values: Vec<Bound> = (0..column.len()).filter_map(|i| bound_of(column, i)).collect();
            let least = values.iter().min_by(|a, b| a.partial_cmp(b).unwrap());
            let most = values.iter().max_by(|a, b| a.partial_cmp(b).unwrap());
            let (Some(least), Some(most)) = (least, most) else {
                assert_eq!((&stats.lower, &stats.upper), (&None, &None), "{what}: no values, no bounds");
                continue;
            };
            bounded += 1;
            match (least, most, stats.lower.as_ref().unwrap(), stats.upper.as_ref().unwrap()) {
                (Bound::Text(l), Bound::Text(m), Bound::Text(lo), Bound::Text(hi)) => {
                    // A prefix below, a short string above: still bounds of every value.
                    assert_eq!(lo, &l.chars().take(TRUNCATE_CHARS).collect::<String>(), "{what}");
                    assert!(hi.chars().count() <= TRUNCATE_CHARS && hi >= m, "{what}: {hi} < {m}");
                    truncated += usize::from(hi != m);
                }
                (l, m, lo, hi) => assert_eq!((lo, hi), (l, m), "{what}: exact bounds"),
            }
        }
    }
    assert!(
        folded > 0 && bounded > 100 && truncated > 0,
        "{folded} outputs of several row groups, {bounded} bounds, {truncated} truncated"
    );
}

#[test]
fn every_output_carries_its_true_period_and_dataset_whatever_an_uploader_names_its_columns() {
    let texts = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    // An uploader's columns named as the period and dataset columns, claiming another's.
    let forged = battle(&[
        ("uuid", texts(&["a", "b"])),
        ("dataset_id", texts(&["victim", "victim"])),
        ("period_tag", texts(&["2020-01-01", "2020-01-01"])),
    ]);
    let honest = battle(&[("uuid", texts(&["c"]))]);
    let inputs = [
        input("k/1", "attacker", "2025-11-05", &custom(&[("battle", forged)])),
        input("k/2", "attacker", "2025-11-05", &custom(&[("battle", honest)])),
    ];
    let result = compact_in_memory(&inputs, &EngineConfig::default()).unwrap();
    for (_, file, finished) in &result.outputs {
        let (got, _) = read_back(file);
        let names: Vec<String> = got.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["uuid", "period_tag", "dataset_id"], "the two columns once, last");
        assert_eq!(got.column_by_name("uuid").unwrap().to_data(), texts(&["a", "b", "c"]).to_data());
        assert_eq!(got.column_by_name("period_tag").unwrap().to_data(), texts(&["2025-11-05"; 3]).to_data());
        assert_eq!(got.column_by_name("dataset_id").unwrap().to_data(), texts(&["attacker"; 3]).to_data());
        let dataset = finished.statistics.iter().find(|s| s.name == "dataset_id").unwrap();
        let attacker = Some(fusou_engine::stats::Bound::Text("attacker".into()));
        assert_eq!((&dataset.lower, &dataset.upper, dataset.nulls), (&attacker, &attacker, 0));
    }
    assert_eq!(result.outputs.len(), 1);
}

#[test]
fn a_roll_up_keeps_every_row_with_its_dataset_whole_datasets_in_order_and_rows_in_time_order() {
    use fusou_engine::rollup::{self, RollupConfig, RollupFile};
    let (period, table) = (PeriodTag::parse("2025-11-05").unwrap(), TableName::parse("battle").unwrap());
    // 12 datasets of 1 to 3 compacted files each, listed out of order.
    let mut files: Vec<(DatasetId, Bytes, u64, u64)> = Vec::new();
    for d in (0..12u64).rev() {
        let dataset = DatasetId::parse(&format!("ds{d:02}")).unwrap();
        for f in 0..=(d % 3) {
            let fragment = synth::fragment(&FragmentSpec { seed: d * 10 + f, rows: 5..=60, include_empty_tables: false });
            let compacted =
                compact_in_memory(&[input("k", dataset.as_str(), period.as_str(), &fragment)], &EngineConfig::default()).unwrap();
            let (_, bytes, finished) = compacted.outputs.into_iter().find(|(p, ..)| p.table == table).unwrap();
            files.push((dataset.clone(), bytes, finished.rows, finished.source_segments));
        }
    }
    let mut expected: Vec<String> = files.iter().flat_map(|(_, bytes, ..)| synth::rows_as_text(&read_back(bytes).0)).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let datasets = rollup::by_dataset(&files, |(d, bytes, ..)| (d.clone(), bytes.len() as u64));
    // Three outputs or so; half the datasets above the sorting limit (their files' order kept).
    let total: u64 = datasets.iter().map(|d| d.bytes).sum();
    let engine = EngineConfig { target_file_bytes: total / 3, min_tail_bytes: 0, write_batch_rows: 50, ..EngineConfig::default() };
    let mut sizes: Vec<u64> = datasets.iter().map(|d| d.bytes).collect();
    sizes.sort();
    let config = RollupConfig { sort_bytes: sizes[sizes.len() / 2] };
    let all: Vec<RollupFile> =
        files.iter().map(|f| RollupFile { dataset: f.0.clone(), bytes: f.1.clone(), rows: f.2, source_segments: f.3 }).collect();
    let mut parts: Vec<Vec<Bytes>> = Vec::new();
    let outputs = rollup::roll_up_in_memory(&period, &table, &all, Some("timestamp"), &engine, &config, |n, part| {
        parts.resize_with(parts.len().max(n + 1), Vec::new);
        parts[n].push(part);
    })
    .unwrap();
    assert!(outputs.len() >= 3, "{} outputs", outputs.len());
    let (mut got, mut seen) = (Vec::new(), Vec::new());
    for (finished, parts) in outputs.iter().zip(&parts) {
        let file = Bytes::from(parts.concat());
        let (batch, _) = read_back(&file);
        assert_eq!(finished.rows, batch.num_rows() as u64);
        got.extend(synth::rows_as_text(&batch));
        let dataset_of = batch.column_by_name("dataset_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let periods = batch.column_by_name("period_tag").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let times = batch.column_by_name("timestamp").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
        assert!(periods.iter().all(|p| p == Some(period.as_str())));
        for i in 0..batch.num_rows() {
            let d = dataset_of.value(i).to_owned();
            if seen.last() != Some(&d) {
                assert!(!seen.contains(&d), "dataset {d} is in one place, in order");
                assert!(seen.last().is_none_or(|last| last < &d), "datasets in order");
                seen.push(d.clone());
            }
            let small = datasets.iter().find(|x| x.dataset.as_str() == d).unwrap().bytes <= config.sort_bytes;
            if small && i > 0 && dataset_of.value(i - 1) == d {
                let (a, b) = (times.is_null(i - 1), times.is_null(i));
                assert!(b || (!a && times.value(i - 1) <= times.value(i)), "{d}: rows in time order, nulls last");
            }
        }
    }
    assert_eq!(seen.len(), 12);
    // Every row, with its own dataset and period.
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}
