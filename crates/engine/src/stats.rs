//! Per-column statistics of a written file, taken from the footer the writer already holds (no
//! second pass over the data): value and null counts, compressed bytes, and lower and upper
//! bounds folded over the row groups. They are what a table's manifest records for each data
//! file, so that readers prune files by value and answer MIN/MAX/COUNT from metadata alone.
//!
//! Bounds are taken only where they are exact or safely wider: integers, finite floats,
//! booleans, dates, timestamps, and strings truncated to [`TRUNCATE_CHARS`] characters (the
//! lower bound a prefix, the upper bound a prefix with its last character incremented), as
//! Iceberg's default `truncate(16)` metrics mode does, so that a long uploaded string never
//! makes the metadata long. Other types carry counts only.

use arrow_array::{Array, ArrayRef, cast::AsArray, types as t};
use arrow_schema::{DataType, Schema, TimeUnit};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};

/// Characters a string bound keeps.
pub const TRUNCATE_CHARS: usize = 16;

/// A bound of a column: its value in the column's own kind (dates as days since the epoch,
/// timestamps as microseconds).
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// A boolean.
    Bool(bool),
    /// An integer, date or timestamp.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string, at most [`TRUNCATE_CHARS`] characters.
    Text(String),
}

/// The statistics of one top-level column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStatistics {
    /// The column's name.
    pub name: String,
    /// Values, nulls included (Iceberg's `value_counts`).
    pub values: u64,
    /// Nulls.
    pub nulls: u64,
    /// Compressed bytes of the column's chunks.
    pub bytes: u64,
    /// At most the least value (`None`: unknown, or no value).
    pub lower: Option<Bound>,
    /// At least the greatest value.
    pub upper: Option<Bound>,
}

/// The statistics of every top-level column of a file of `schema` whose footer is `metadata`.
/// A column whose statistics the footer lacks gets no bounds (a bound is never guessed).
pub fn of_file(schema: &Schema, metadata: &ParquetMetaData) -> Vec<ColumnStatistics> {
    let row_groups = metadata.row_groups();
    let rows: u64 = row_groups.iter().map(|g| g.num_rows() as u64).sum();
    schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            let mut column = ColumnStatistics { name: name.clone(), values: rows, nulls: 0, bytes: 0, lower: None, upper: None };
            let Ok(converter) = StatisticsConverter::try_new(name, schema, metadata.file_metadata().schema_descr()) else {
                return column;
            };
            if let Some(leaf) = converter.parquet_column_index() {
                column.bytes = row_groups.iter().map(|g| g.column(leaf).compressed_size() as u64).sum();
            }
            let nulls = converter.row_group_null_counts(row_groups.iter()).ok();
            // A row group without a null count leaves the file's unknown, and then its bounds
            // too (a bound over some row groups is no bound).
            let Some(nulls) = nulls.filter(|n| n.null_count() == 0) else {
                return column;
            };
            column.nulls = nulls.values().iter().sum();
            let every_group = |a: &ArrayRef| a.len() == row_groups.len();
            let all_null = column.nulls == rows;
            if let (Ok(mins), Ok(maxes)) = (converter.row_group_mins(row_groups.iter()), converter.row_group_maxes(row_groups.iter()))
                && every_group(&mins)
                && every_group(&maxes)
                && !all_null
            {
                column.lower = fold(&mins, field.data_type(), Extreme::Lower);
                column.upper = fold(&maxes, field.data_type(), Extreme::Upper);
            }
            column
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Extreme {
    Lower,
    Upper,
}

/// The least (or greatest) of the row groups' bounds, or `None` if a row group that holds
/// values has none, or the type has no bound here.
fn fold(bounds: &ArrayRef, data_type: &DataType, extreme: Extreme) -> Option<Bound> {
    let mut folded: Option<Bound> = None;
    for i in 0..bounds.len() {
        // A row group of nulls only has no bound, and needs none; the null counts said the
        // column holds values, so some group has one.
        let value = if bounds.is_null(i) { continue } else { value(bounds, i, data_type)? };
        let better = match (&folded, extreme) {
            (None, _) => true,
            (Some(b), Extreme::Lower) => value.partial_cmp(b) == Some(std::cmp::Ordering::Less),
            (Some(b), Extreme::Upper) => value.partial_cmp(b) == Some(std::cmp::Ordering::Greater),
        };
        if better {
            folded = Some(value);
        }
    }
    match (folded?, extreme) {
        (Bound::Text(s), Extreme::Lower) => Some(Bound::Text(s.chars().take(TRUNCATE_CHARS).collect())),
        (Bound::Text(s), Extreme::Upper) => truncate_upper(&s).map(Bound::Text),
        (b, _) => Some(b),
    }
}

/// Value `i` of a row-group bound array, as a [`Bound`]; `None` for a type without bounds here
/// or a float that is not finite.
fn value(a: &ArrayRef, i: usize, data_type: &DataType) -> Option<Bound> {
    use DataType as D;
    let int = |v: i64| Some(Bound::Int(v));
    match data_type {
        D::Boolean => Some(Bound::Bool(a.as_boolean().value(i))),
        D::Int8 => int(a.as_primitive::<t::Int8Type>().value(i).into()),
        D::Int16 => int(a.as_primitive::<t::Int16Type>().value(i).into()),
        D::Int32 => int(a.as_primitive::<t::Int32Type>().value(i).into()),
        D::Int64 => int(a.as_primitive::<t::Int64Type>().value(i)),
        D::UInt8 => int(a.as_primitive::<t::UInt8Type>().value(i).into()),
        D::UInt16 => int(a.as_primitive::<t::UInt16Type>().value(i).into()),
        D::UInt32 => int(a.as_primitive::<t::UInt32Type>().value(i).into()),
        D::Date32 => int(a.as_primitive::<t::Date32Type>().value(i).into()),
        D::Timestamp(TimeUnit::Microsecond, _) => int(a.as_primitive::<t::TimestampMicrosecondType>().value(i)),
        D::Float32 => Some(a.as_primitive::<t::Float32Type>().value(i).into()).filter(|v: &f64| v.is_finite()).map(Bound::Float),
        D::Float64 => Some(a.as_primitive::<t::Float64Type>().value(i)).filter(|v| v.is_finite()).map(Bound::Float),
        D::Utf8 => Some(Bound::Text(a.as_string::<i32>().value(i).to_owned())),
        D::LargeUtf8 => Some(Bound::Text(a.as_string::<i64>().value(i).to_owned())),
        _ => None,
    }
}

/// An upper bound of every string `s` bounds, at most [`TRUNCATE_CHARS`] characters: `s`
/// itself when short enough, else its prefix with the last character that can be incremented
/// incremented (`None` when none can).
fn truncate_upper(s: &str) -> Option<String> {
    let mut prefix: Vec<char> = s.chars().take(TRUNCATE_CHARS + 1).collect();
    if prefix.len() <= TRUNCATE_CHARS {
        return Some(s.to_owned());
    }
    prefix.truncate(TRUNCATE_CHARS);
    while let Some(last) = prefix.pop() {
        // The next scalar value, skipping the surrogate gap.
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            prefix.push(next);
            return Some(prefix.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_bounded_by_short_ones() {
        let long = "abcdefghijklmnopqrstuvwxyz";
        assert_eq!(truncate_upper(long).as_deref(), Some("abcdefghijklmnoq"));
        assert_eq!(truncate_upper("short"), Some("short".into()));
        // Exactly at the limit: kept as it is.
        assert_eq!(truncate_upper("abcdefghijklmnop").as_deref(), Some("abcdefghijklmnop"));
        // The last character cannot grow: the one before it does.
        let max = format!("{}{}", "a".repeat(15), char::MAX).repeat(2);
        assert_eq!(truncate_upper(&max), Some(format!("{}b", "a".repeat(14))));
        assert!(truncate_upper(&char::MAX.to_string().repeat(20)).is_none());
        // Every truncated upper bound is above the string it bounds.
        for s in [long, "ゆうだち改二ゆうだち改二ゆうだち改二", "zzzzzzzzzzzzzzzzzzzzzzzzz"] {
            assert!(truncate_upper(s).unwrap().as_str() > s);
        }
    }
}
