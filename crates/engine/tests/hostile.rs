//! Hostile segments: sizes, counts and offsets that lie. Each is refused by the upload's check
//! with its reason, and, handed to the compaction engine anyway (as a segment uploaded before a
//! check existed would be), quarantined there: never a panic, never an allocation it declares.
//!
//! The cases are forged ([`fusou_synth::forge`]) and kept as the seed corpus in
//! `tests/hostile/` (`FUSOU_WRITE_CORPUS=1` rewrites it), beside segments the fuzzer found
//! (`found_*`); every file there runs here, each with the reason it must be refused for.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use bytes::Bytes;
use fusou_contract::fragment::{TableOffset, inspect_segment};
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_engine::segment::FragmentInput;
use fusou_engine::{EngineConfig, compact_in_memory};
use fusou_synth::forge::Forge;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn offset(len: usize) -> TableOffset {
    TableOffset {
        table_name: TableName::parse("battle").unwrap(),
        start_byte: 0,
        byte_length: len as u64,
        format: "parquet".into(),
        num_rows: None,
    }
}

/// The forged cases: a name, the file, and what its refusal must say.
fn cases() -> Vec<(&'static str, Forge, &'static str)> {
    let honest = Forge::honest;
    let with = |f: fn(&mut Forge)| {
        let mut forge = honest();
        f(&mut forge);
        forge
    };
    vec![
        ("twenty_million_null_rows", Forge::nulls_and(20_000_000, &[]), "rows, more than"),
        ("half_a_million_null_rows_in_a_few_bytes", Forge::nulls_and(500_000, &[]), "rows a byte"),
        ("page_declares_2_gib", with(|f| f.uncompressed = Some(i32::MAX)), "uncompressed bytes, more than"),
        (
            "snappy_block_declares_4_gib",
            with(|f| {
                f.codec = 1;
                f.snappy_length = Some(u32::MAX as u64);
            }),
            "decompresses to",
        ),
        ("negative_page_size", with(|f| f.compressed = Some(-5)), "negative"),
        ("page_runs_past_its_chunk", with(|f| f.compressed = Some(1 << 20)), "runs past its column chunk"),
        ("statistics_length_of_a_terabyte", with(|f| f.statistics_length = Some(1 << 40)), "runs past the end"),
        ("chunk_offset_near_i64_max", with(|f| f.data_page_offset = Some(i64::MAX - 2)), "overflows"),
        ("chunk_offset_negative", with(|f| f.data_page_offset = Some(-100)), "outside the segment"),
        ("chunk_length_past_the_pages", with(|f| f.chunk_compressed = Some(1 << 30)), "outside the segment"),
        ("a_thousand_columns", with(|f| f.extra_columns = 1000), "columns, more than"),
        ("schema_nested_sixty_deep", with(|f| f.nesting = 60), "not flat"),
        ("schema_nested_two_deep", with(|f| f.nesting = 2), "not flat"),
        ("a_hundred_row_groups", with(|f| f.row_groups = 100), "row groups, more than"),
        ("footer_of_300_kib", with(|f| f.footer_padding = 300 << 10), "footer is"),
        ("zstd_codec", with(|f| f.codec = 6), "not one the client writes"),
        ("page_values_disagree_with_the_chunk", with(|f| f.page_values = 7), "levels cover 3 of its 7 values"),
        ("chunk_values_disagree_with_the_pages", with(|f| f.page_values = 2), "values in a chunk"),
        ("dictionary_indices_without_a_dictionary", with(|f| f.encoding = 8), "dictionary the chunk does not have"),
        ("empty_dictionary_with_bytes", with(|f| f.dictionary = Some((0, vec![1, 2, 3, 4]))), "a dictionary of 0 entries"),
        ("dictionary_of_more_entries_than_bytes", with(|f| f.dictionary = Some((1_000_000, vec![1, 2, 3, 4]))), "a dictionary of"),
        ("delta_encoding", with(|f| f.encoding = 5), "not one the client writes"),
        ("index_page", with(|f| f.page_type = 1), "a page of type 1"),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// Compacts `bytes` as one segment of one fragment, without the upload's row count: answers
/// the quarantine reason, or panics if the engine took it.
fn engine_quarantines(bytes: &[u8]) -> String {
    let input = FragmentInput {
        key: "k/hostile".into(),
        dataset: DatasetId::parse("ds").unwrap(),
        period: PeriodTag::parse("2025-11-05").unwrap(),
        offsets: vec![offset(bytes.len())],
        bytes: Bytes::copy_from_slice(bytes),
        compacted: None,
    };
    let result = catch_unwind(AssertUnwindSafe(|| compact_in_memory(&[input], &EngineConfig::default())));
    let result = result.unwrap_or_else(|_| panic!("the engine panicked")).expect("a run goes on past a bad segment");
    let quarantined: Vec<String> = result.scan.quarantined.iter().map(|q| q.error.clone()).collect();
    let merged: Vec<String> = result.outputs.iter().flat_map(|(_, _, f)| f.quarantined.iter().map(|(_, e)| e.clone())).collect();
    let rows: u64 = result.outputs.iter().map(|(_, _, f)| f.rows).sum();
    assert_eq!(rows, 0, "no row of a hostile segment is written");
    quarantined.into_iter().chain(merged).next().expect("the segment is quarantined")
}

#[test]
fn the_forged_honest_file_is_valid_parquet() {
    let bytes = Forge::honest().bytes();
    let info = inspect_segment(&offset(bytes.len()), Bytes::from(bytes.clone())).unwrap();
    assert_eq!(info.num_rows, 3);
    let batches: Vec<_> =
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap().build().unwrap().map(Result::unwrap).collect();
    let column = batches[0].column(0).as_any().downcast_ref::<arrow_array::Int32Array>().unwrap().clone();
    assert_eq!(column.values().to_vec(), [1, 2, 3]);
    // With nulls, with Snappy, and with a dictionary page, still valid.
    let mut snappy = Forge::nulls_and(5, &[7, 8]);
    snappy.codec = 1;
    let bytes = snappy.bytes();
    assert_eq!(inspect_segment(&offset(bytes.len()), Bytes::from(bytes.clone())).unwrap().num_rows, 5);
    let rows: usize =
        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap().build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 5);
}

#[test]
fn every_forged_case_is_refused_at_upload_and_quarantined_by_the_engine() {
    for (name, forge, reason) in cases() {
        let bytes = forge.bytes();
        let refused = inspect_segment(&offset(bytes.len()), Bytes::from(bytes.clone()));
        let error = refused.expect_err(name).to_string();
        assert!(error.contains(reason), "{name}: {error}");
        let quarantined = engine_quarantines(&bytes);
        assert!(quarantined.contains(reason), "{name}: quarantined for {quarantined}");
    }
}

#[test]
fn the_corpus_is_refused_or_quarantined_with_its_reason() {
    if std::env::var("FUSOU_WRITE_CORPUS").is_ok() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, forge, reason) in cases() {
            std::fs::write(corpus_dir().join(format!("{name}.parquet")), forge.bytes()).unwrap();
            std::fs::write(corpus_dir().join(format!("{name}.reason")), reason).unwrap();
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "parquet"));
    files.sort();
    assert!(files.len() >= cases().len(), "the corpus holds every forged case");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let reason = std::fs::read_to_string(file.with_extension("reason")).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // A segment the upload accepts (one whose pages lie only in their data) must then be
        // quarantined by the merge, for its reason.
        let upload = catch_unwind(|| inspect_segment(&offset(bytes.len()), Bytes::from(bytes.clone())))
            .unwrap_or_else(|_| panic!("{name}: the upload check panicked"));
        let quarantined = engine_quarantines(&bytes);
        let said = match upload {
            Err(e) => e.to_string(),
            Ok(_) => quarantined,
        };
        assert!(said.contains(reason.trim()), "{name}: {said}");
    }
}
