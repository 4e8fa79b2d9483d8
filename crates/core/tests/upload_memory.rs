//! Peak memory of the upload's check of one body (its digest and every segment's guard), past
//! the body itself, which the request holds anyway: for the largest body the upload accepts,
//! and for the worst footer that passes the footer caps. Printed, and bounded.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use fusou_contract::fragment::{self, Limits, TableOffset};
use fusou_contract::ids::TableName;
use fusou_core::measure::{Counting, peak_growth};
use fusou_core::upload::{ContentHash, UploadLimits};
use fusou_synth as synth;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

#[global_allocator]
static ALLOCATOR: Counting = Counting::SYSTEM;

fn mib(n: usize) -> f64 {
    n as f64 / (1 << 20) as f64
}

/// What the upload Worker does with a body: its digest, then the guard over each segment.
fn check(offsets: &[TableOffset], body: &Bytes) -> u64 {
    let _digest = ContentHash::of(body);
    fragment::validate_offsets(offsets, body.len() as u64).unwrap();
    fragment::inspect_fragment(offsets, body).unwrap().iter().map(|s| s.num_rows).sum()
}

// One test, so that nothing else allocates while it measures.
#[test]
fn an_upload_check_holds_little_beside_its_body() {
    let max = UploadLimits::default().max_fragment_bytes;
    for tables in [1, 32] {
        let f = synth::fragment_of_size(7, tables, max - (256 << 10));
        assert!(f.bytes.len() as u64 <= max);
        let body = Bytes::from(f.bytes.clone());
        let (rows, growth) = peak_growth(|| check(&f.offsets, &body));
        println!(
            "upload memory: largest body {:.1} MiB, {tables} tables, {rows} rows: peak +{:.2} MiB ({:.2}x the body)",
            mib(body.len()),
            mib(growth),
            (body.len() + growth) as f64 / body.len() as f64
        );
        assert!(growth <= body.len(), "at most 2x the body: +{growth} bytes");
    }

    // The worst footer: the most column chunks whose footer fits the cap (128 columns, as many
    // row groups of one row as fit), statistics and all.
    let limits = Limits::default();
    let schema =
        Arc::new(Schema::new((0..limits.max_columns).map(|i| Field::new(format!("c{i}"), DataType::Int32, true)).collect::<Vec<_>>()));
    let segment = |groups: usize| {
        let columns: Vec<ArrayRef> =
            (0..limits.max_columns).map(|_| Arc::new(Int32Array::from_iter_values(0..groups as i32)) as ArrayRef).collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(1)).build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out
    };
    let footer_len = |s: &[u8]| u32::from_le_bytes(s[s.len() - 8..s.len() - 4].try_into().unwrap()) as usize;
    let per_group = footer_len(&segment(2)) - footer_len(&segment(1));
    let groups = ((limits.max_footer_bytes - footer_len(&segment(1))) / per_group).min(limits.max_row_groups);
    let worst = segment(groups);
    let offset = TableOffset {
        table_name: TableName::parse("battle").unwrap(),
        start_byte: 0,
        byte_length: worst.len() as u64,
        format: "parquet".into(),
        num_rows: None,
    };
    let body = Bytes::from(worst);
    let (rows, growth) = peak_growth(|| check(std::slice::from_ref(&offset), &body));
    println!(
        "upload memory: worst footer {:.0} KiB ({} columns x {groups} row groups), body {:.0} KiB, {rows} rows: peak +{:.2} MiB",
        footer_len(&body) as f64 / 1024.0,
        limits.max_columns,
        body.len() as f64 / 1024.0,
        mib(growth)
    );
    assert!(growth <= 8 << 20, "a footer within the caps costs at most 8 MiB: +{growth} bytes");
}
