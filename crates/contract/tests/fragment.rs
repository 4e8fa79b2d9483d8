//! The fragment format against fragments shaped like the client's.

use bytes::Bytes;
use serde::Deserialize;

use fusou_contract::fragment::*;
use fusou_contract::ids::TableName;
use fusou_synth::{FragmentSpec, client_tables, fragment};
use parquet::file::metadata::ParquetMetaDataReader;

fn offset(table: &str, start: u64, len: u64) -> TableOffset {
    TableOffset {
        table_name: TableName::parse(table).unwrap(),
        start_byte: start,
        byte_length: len,
        format: "parquet".into(),
        num_rows: None,
    }
}

#[derive(Deserialize)]
struct Holder {
    #[serde(deserialize_with = "deserialize_offsets")]
    table_offsets: Vec<TableOffset>,
}

#[test]
fn offsets_arrive_as_a_json_string_or_an_array() {
    let as_string = r#"{"table_offsets": "[{\"table_name\":\"battle\",\"start_byte\":0,\"byte_length\":5120,\"format\":\"parquet\"}]"}"#;
    let as_array = r#"{"table_offsets": [{"table_name":"battle","start_byte":0,"byte_length":5120,"format":"parquet","num_rows":3}]}"#;
    let a: Holder = serde_json::from_str(as_string).unwrap();
    let b: Holder = serde_json::from_str(as_array).unwrap();
    assert_eq!(a.table_offsets[0], offset("battle", 0, 5120));
    assert_eq!(b.table_offsets[0].num_rows, Some(3));
    for bad in [
        r#"{"table_offsets": "not json"}"#,
        r#"{"table_offsets": "{}"}"#,
        r#"{"table_offsets": 3}"#,
        r#"{"table_offsets": [{"table_name":"battle"}]}"#,
        r#"{"table_offsets": [{"table_name":"../x","start_byte":0,"byte_length":20}]}"#,
        r#"{"table_offsets": [{"table_name":"battle","start_byte":-1,"byte_length":20}]}"#,
        r#"{"table_offsets": [{"table_name":"battle","start_byte":0,"byte_length":20,"extra":1}]}"#,
    ] {
        assert!(serde_json::from_str::<Holder>(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn offsets_must_fit_and_not_overlap() {
    let check = |offsets: Vec<TableOffset>, size: u64| validate_offsets(&offsets, size);
    assert_eq!(check(vec![offset("a", 0, 100), offset("b", 100, 50)], 150), Ok(()));
    assert_eq!(check(vec![], 10), Err(FragmentError::Empty));
    assert!(matches!(check(vec![offset("a", 0, 100), offset("b", 99, 50)], 200), Err(FragmentError::Overlap { .. })));
    assert!(matches!(check(vec![offset("a", 0, 100)], 99), Err(FragmentError::OutOfRange { .. })));
    assert!(matches!(check(vec![offset("a", u64::MAX - 5, 100)], 99), Err(FragmentError::OutOfRange { .. })));
    assert!(matches!(check(vec![offset("a", 0, 0)], 99), Err(FragmentError::TooShort { .. })));
    assert!(matches!(check(vec![offset("a", 0, 20), offset("a", 20, 20)], 40), Err(FragmentError::Duplicate { .. })));
    let mut csv = offset("a", 0, 20);
    csv.format = "csv".into();
    assert!(matches!(check(vec![csv], 40), Err(FragmentError::Format { .. })));
    // Distinct tables are capped: each can be an output of the run that compacts the fragment.
    let tables = |n: u64| (0..n).map(|i| offset(&format!("t{i}"), i * 20, 20)).collect::<Vec<_>>();
    assert_eq!(check(tables(MAX_SEGMENTS as u64), 20 * MAX_SEGMENTS as u64), Ok(()));
    assert_eq!(check(tables(MAX_SEGMENTS as u64 + 1), 20 * (MAX_SEGMENTS as u64 + 1)), Err(FragmentError::TooMany(MAX_SEGMENTS + 1)));
}

#[test]
fn a_generated_fragment_is_32_readable_segments_in_any_order() {
    let f = fragment(&FragmentSpec { seed: 7, rows: 1..=30, include_empty_tables: false });
    assert_eq!(f.offsets.len(), client_tables().len());
    assert_eq!(client_tables().len(), 32);
    validate_offsets(&f.offsets, f.bytes.len() as u64).unwrap();
    let bytes = Bytes::from(f.bytes.clone());
    let infos = inspect_fragment(&f.offsets, &bytes).unwrap();
    for (info, seg) in infos.iter().zip(&f.segments) {
        assert_eq!(info.table_name, seg.table);
        assert_eq!(info.num_rows, seg.batch.num_rows() as u64);
        let names: Vec<&str> = info.columns.iter().map(String::as_str).collect();
        let schema = seg.batch.schema();
        let expected: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, expected);
    }
    // The order is shuffled, not the catalogue's.
    let order: Vec<&str> = f.offsets.iter().map(|o| o.table_name.as_str()).collect();
    let catalogue: Vec<&str> = client_tables().iter().map(|t| t.name.as_str()).collect();
    assert_ne!(order, catalogue);
    // The same seed gives the same bytes.
    assert_eq!(fragment(&FragmentSpec { seed: 7, rows: 1..=30, include_empty_tables: false }).bytes, f.bytes);
}

#[test]
fn broken_segments_are_named() {
    let f = fragment(&FragmentSpec::default());
    let o = &f.offsets[3];
    let table = o.table_name.to_string();
    let mut bytes = f.bytes.clone();

    // Not PAR1 at the start.
    bytes[o.start_byte as usize] = b'X';
    let err = inspect_fragment(&f.offsets, &Bytes::from(bytes.clone())).unwrap_err();
    assert!(matches!(&err, FragmentError::NotParquet { table: t, .. } if *t == table), "{err}");

    // Magic intact, footer garbage.
    let mut bytes = f.bytes.clone();
    let footer_len_at = (o.end() - 8) as usize;
    bytes[footer_len_at - 20..footer_len_at].fill(0xFF);
    let err = inspect_fragment(&f.offsets, &Bytes::from(bytes)).unwrap_err();
    assert!(matches!(&err, FragmentError::NotParquet { table: t, .. } if *t == table), "{err}");

    // A row count that disagrees with the footer.
    let mut offsets = f.offsets.clone();
    offsets[3].num_rows = Some(offsets[3].num_rows.unwrap() + 1);
    let err = inspect_fragment(&offsets, &Bytes::from(f.bytes.clone())).unwrap_err();
    assert!(matches!(err, FragmentError::RowCount { .. }), "{err}");
}

#[test]
fn empty_tables_are_still_valid_segments() {
    let f = fragment(&FragmentSpec { seed: 3, rows: 0..=0, include_empty_tables: true });
    assert_eq!(f.offsets.len(), 32);
    let infos = inspect_fragment(&f.offsets, &Bytes::from(f.bytes.clone())).unwrap();
    assert_eq!(infos.iter().map(|i| i.num_rows).sum::<u64>(), 1, "only env_info has its one row");
}

#[test]
fn a_footer_that_begins_with_a_schema_s_bytes_has_that_schema() {
    let footer_of = |f: &fusou_synth::Fragment, table: &str| {
        let o = f.offsets.iter().find(|o| o.table_name.as_str() == table).unwrap().clone();
        let footer = segment_footer(&o, &f.bytes[o.start_byte as usize..o.end() as usize]).unwrap().to_vec();
        (o, footer)
    };
    let (a, b) =
        (fragment(&FragmentSpec { seed: 1, ..FragmentSpec::default() }), fragment(&FragmentSpec { seed: 2, ..FragmentSpec::default() }));
    let (o, battle) = footer_of(&a, "battle");
    let n = schema_prefix_len(&battle);
    // The shortest prefix that decodes, and it decodes to the footer's schema.
    assert!(ParquetMetaDataReader::decode_schema(&battle[..n - 1]).is_err());
    assert_eq!(footer_schema(&o, &battle[..n]).unwrap(), footer_schema(&o, &battle).unwrap());
    assert!(n < battle.len(), "the row groups follow the schema");
    // Another segment of the table shares those bytes; another table's does not.
    assert!(footer_of(&b, "battle").1.starts_with(&battle[..n]));
    assert!(!footer_of(&a, "cells").1.starts_with(&battle[..n]));
}
