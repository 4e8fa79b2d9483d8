//! Planning: which segments go into which output. Pure and synchronous: the same segments give
//! the same plan.
//!
//! Per (dataset, period, table), distinct schemas are unified (see [`super::evolution`]); per
//! resulting group, segments are taken in fragment-key order (keys begin with the upload time,
//! so outputs follow time) and packed next-fit into bins of at most `target_file_bytes` input
//! bytes and `max_inputs_per_bin` segments.
//!
//! Tail policy: a group's last bin smaller than `min_tail_bytes` joins the bin before it if that
//! bin stays within 1.25 × `target_file_bytes`, so a run does not leave a tiny file behind
//! after a large one. A group that fits one bin is written as one file, however small: every
//! pending segment must reach the compacted store, and a fragment's segment is never copied
//! alone when others of its group can share its file.
//!
//! Segments with no rows (older clients upload empty tables) are planned into no output: they
//! are consumed, and there is nothing to write.

use std::collections::{BTreeMap, HashMap};

use arrow_schema::SchemaRef;

use super::EngineConfig;
use super::evolution::{Fingerprint, unify};
use super::segment::Scan;
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};

/// One output file to write.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    /// The dataset the output belongs to.
    pub dataset: DatasetId,
    /// Its period.
    pub period: PeriodTag,
    /// Its table.
    pub table: TableName,
    /// The superset schema every input is aligned to.
    pub schema: SchemaRef,
    /// The fingerprint of the schema its segments are merged under.
    pub fingerprint: Fingerprint,
    /// Indices into the planned segments, in write order.
    pub inputs: Vec<usize>,
    /// Input bytes of its segments.
    pub input_bytes: u64,
    /// Rows of its segments.
    pub input_rows: u64,
}

/// A bin of the packer: indices and their total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    /// Indices of its segments in the scan.
    pub inputs: Vec<usize>,
    /// Their bytes.
    pub bytes: u64,
}

/// Packs `(index, size)` candidates, in the order given, into bins (see the module docs).
pub fn pack(candidates: &[(usize, u64)], config: &EngineConfig) -> Vec<Bin> {
    let mut bins: Vec<Bin> = Vec::new();
    for &(index, size) in candidates {
        let fits = bins.last().is_some_and(|b| b.inputs.len() < config.max_inputs_per_bin && b.bytes + size <= config.target_file_bytes);
        match bins.last_mut() {
            Some(bin) if fits || bin.inputs.is_empty() => {
                bin.inputs.push(index);
                bin.bytes += size;
            }
            _ => bins.push(Bin { inputs: vec![index], bytes: size }),
        }
    }
    if bins.len() >= 2 {
        let tail = &bins[bins.len() - 1];
        let before = &bins[bins.len() - 2];
        let slack = config.target_file_bytes + config.target_file_bytes / 4;
        if tail.bytes < config.min_tail_bytes
            && before.bytes + tail.bytes <= slack
            && before.inputs.len() + tail.inputs.len() <= config.max_inputs_per_bin
        {
            let tail = bins.pop().expect("two bins");
            let last = bins.last_mut().expect("one bin");
            last.inputs.extend(tail.inputs);
            last.bytes += tail.bytes;
        }
    }
    bins
}

/// Plans the outputs for everything `scan` found.
pub fn plan(scan: &Scan, config: &EngineConfig) -> Vec<OutputPlan> {
    let segments = &scan.segments;
    // (dataset, period, table) → that table's segments; BTreeMap keeps the plan's order stable.
    let mut tables: BTreeMap<(&DatasetId, &PeriodTag, &TableName), Vec<usize>> = BTreeMap::new();
    for (i, s) in segments.iter().enumerate().filter(|(_, s)| s.rows > 0) {
        let f = scan.fragment(s);
        tables.entry((&f.dataset, &f.period, scan.table(s))).or_default().push(i);
    }
    let mut outputs = Vec::new();
    for ((dataset, period, table), mut members) in tables {
        members.sort_by(|&a, &b| scan.fragment(&segments[a]).key.cmp(&scan.fragment(&segments[b]).key));
        let distinct: HashMap<Fingerprint, SchemaRef> =
            members.iter().map(|&i| scan.schemas[segments[i].schema as usize].clone()).collect();
        for group in unify(&distinct) {
            let candidates: Vec<(usize, u64)> = members
                .iter()
                .filter(|&&i| group.members.contains(scan.fingerprint(&segments[i])))
                .map(|&i| (i, segments[i].len as u64))
                .collect();
            for bin in pack(&candidates, config) {
                outputs.push(OutputPlan {
                    dataset: dataset.clone(),
                    period: period.clone(),
                    table: table.clone(),
                    schema: group.schema.clone(),
                    fingerprint: group.fingerprint.clone(),
                    input_rows: bin.inputs.iter().map(|&i| segments[i].rows as u64).sum(),
                    input_bytes: bin.bytes,
                    inputs: bin.inputs,
                });
            }
        }
    }
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(target: u64, max_inputs: usize, min_tail: u64) -> EngineConfig {
        EngineConfig { target_file_bytes: target, max_inputs_per_bin: max_inputs, min_tail_bytes: min_tail, ..EngineConfig::default() }
    }

    /// Packs candidates of the given sizes and answers the bins' sizes.
    fn check(sizes: &[u64], config: &EngineConfig, expected: &[&[u64]]) {
        let candidates: Vec<(usize, u64)> = sizes.iter().copied().enumerate().collect();
        let bins = pack(&candidates, config);
        let shapes: Vec<Vec<u64>> = bins.iter().map(|b| b.inputs.iter().map(|&i| sizes[i]).collect()).collect();
        let expected: Vec<Vec<u64>> = expected.iter().map(|b| b.to_vec()).collect();
        assert_eq!(shapes, expected);
        for bin in &bins {
            assert_eq!(bin.bytes, bin.inputs.iter().map(|&i| sizes[i]).sum::<u64>());
        }
    }

    #[test]
    fn next_fit_up_to_the_target() {
        check(&[40, 40, 40, 40, 40], &config(100, 100, 0), &[&[40, 40], &[40, 40], &[40]]);
        check(&[10; 4], &config(100, 100, 0), &[&[10, 10, 10, 10]]);
    }

    #[test]
    fn an_input_larger_than_the_target_gets_its_own_bin() {
        check(&[10, 500, 10], &config(100, 100, 0), &[&[10], &[500], &[10]]);
    }

    #[test]
    fn the_input_cap_bounds_a_bin() {
        check(&[1; 5], &config(100, 2, 0), &[&[1, 1], &[1, 1], &[1]]);
    }

    #[test]
    fn a_tiny_tail_joins_the_bin_before_it() {
        check(&[60, 30, 5], &config(90, 100, 20), &[&[60, 30, 5]]);
        // Not when that would overflow the slack (1.25 × target).
        check(&[60, 50, 5], &config(90, 100, 20), &[&[60], &[50, 5]]);
        check(&[100, 30], &config(100, 100, 40), &[&[100], &[30]]);
        // A tail at or above the minimum stays.
        check(&[60, 30, 20], &config(90, 100, 20), &[&[60, 30], &[20]]);
    }

    #[test]
    fn empty_input_plans_nothing() {
        check(&[], &config(100, 100, 0), &[]);
    }
}
