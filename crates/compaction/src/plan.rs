//! What a run does, decided as values before it is done: every policy of a run lives here once,
//! pure, and is tested on the plan it gives. The executor ([`super::compact`]) walks lease →
//! list → [`inputs`] → read → [`outputs`] → stage → merge → commit, and decides nothing.
//!
//! - **Which fragments a run takes** ([`inputs`]): from the listing (pending fragments, those
//!   not isolated first, in upload order), as many as fit [`RunConfig::max_fragments`],
//!   [`RunConfig::max_run_bytes`] and [`RunConfig::max_outputs`], and at least one; an isolated
//!   fragment alone. (The listing query only bounds what it lists: a run's share and one more.)
//! - **Which it sets aside unread**: a fragment larger than [`RunConfig::max_fragment_bytes`],
//!   and a lone fragment whose run's invocations have kept dying.
//! - **Whether it gives up reading them together** ([`Inputs::Isolate`]): a run of several
//!   fragments whose invocations have kept dying isolates them instead.
//! - **Which small compacted files it merges again** ([`consolidate::choose`]), within what its
//!   fragments leave of its caps.
//! - **Its outputs, their keys and its merge steps** ([`outputs`]), from what the read found:
//!   the engine's bin-packing ([`fusou_engine::binpack::plan`]), one key per output, and
//!   consecutive outputs packed into checkpointed steps of [`RunConfig::merge_step_bytes`].
//!
//! Planning is deterministic: a run resumed from its checkpoints plans the same outputs.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::RunConfig;
use super::consolidate::{self, Room, SmallFile};
use fusou_contract::fragment::TableOffset;
use fusou_contract::ids::{DatasetId, PeriodTag, TableName};
use fusou_engine::binpack::{self as bins, OutputPlan};
use fusou_engine::segment::{Quarantined, Scan};

/// Small files listed per run at most (the oldest): what one run can consolidate is far less.
pub const SMALL_FILES_LISTED: u64 = 2000;

/// A pending fragment as `list-fragments` found it: decoded from its index row
/// ([`fusou_core::index::PENDING_FRAGMENTS`]: `table_name`, `period_tag`, `table_offsets` as JSON
/// text, `isolated` as 0 or 1) or from its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRow {
    pub key: String,
    #[serde(alias = "table_name")]
    pub table: TableName,
    #[serde(alias = "period_tag")]
    pub period: PeriodTag,
    pub size: u64,
    #[serde(alias = "table_offsets", deserialize_with = "fusou_contract::fragment::deserialize_offsets")]
    pub offsets: Vec<TableOffset>,
    /// Taken alone by a run (see [`RunConfig::invocations_before_isolation`]).
    #[serde(default, deserialize_with = "fusou_core::index::flag")]
    pub isolated: bool,
}

/// What a run listed: its share of the pending fragments and one more, and the dataset's
/// small compacted files.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub fragments: Vec<FragmentRow>,
    pub small_files: Vec<SmallFile>,
}

/// What a run does with its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// Read them (those not set aside) and compact them.
    Read(ReadPlan),
    /// Give up reading these fragments together: each is taken alone by a later run.
    Isolate(Vec<String>),
}

/// The inputs of a run that reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// Every fragment the run consumes, read or set aside, in listing order.
    pub taken: Vec<FragmentRow>,
    /// The taken fragments left unread, each quarantined whole (table `*`) with why.
    pub set_aside: Vec<Quarantined>,
    /// Small compacted files merged into the outputs, retired by the commit.
    pub consolidate: Vec<SmallFile>,
    /// More is pending than this run takes: it asks for a continuation.
    pub continue_after: bool,
}

impl ReadPlan {
    /// The fragments to read: those taken and not set aside.
    pub fn to_read(&self) -> impl Iterator<Item = &FragmentRow> {
        self.taken.iter().filter(|f| !self.set_aside.iter().any(|q| q.fragment_key == f.key))
    }

    /// The bytes the run reads: the fragments it reads and the files it consolidates.
    pub fn bytes(&self) -> u64 {
        self.to_read().map(|f| f.size).chain(self.consolidate.iter().map(|f| f.size)).sum()
    }

    /// The keys of every fragment taken (all marked compacted by the commit, set aside or not).
    pub fn consumed(&self) -> Vec<String> {
        self.taken.iter().map(|f| f.key.clone()).collect()
    }

    /// The files consolidated and retired: those chosen, but for one that did not scan (it is in
    /// no output, so it stays live).
    pub fn retired(&self, scan: &Scan) -> Vec<String> {
        self.consolidate.iter().map(|f| f.key.clone()).filter(|k| !scan.quarantined.iter().any(|q| &q.fragment_key == k)).collect()
    }

    /// The tables of the files it retires.
    pub fn retired_tables(&self, scan: &Scan) -> Vec<String> {
        let retired = self.retired(scan);
        self.consolidate.iter().filter(|f| retired.contains(&f.key)).map(|f| f.table.to_string()).collect()
    }
}

/// The inputs a run takes from `listing`. `invocations` counts this run's invocations that
/// began reading, this one included (`None` for a run whose commit is already done: it reads
/// to find out it has nothing to redo).
pub fn inputs(listing: &Listing, invocations: Option<u64>, config: &RunConfig) -> Inputs {
    let share = run_share(&listing.fragments, config);
    let taken = listing.fragments[..share].to_vec();
    let continue_after = listing.fragments.len() > share;
    let failing = invocations.is_some_and(|n| n > config.invocations_before_isolation);
    if failing && taken.len() > 1 {
        return Inputs::Isolate(taken.iter().map(|f| f.key.clone()).collect());
    }
    let mut set_aside: Vec<Quarantined> = taken
        .iter()
        .filter(|f| f.size > config.max_fragment_bytes)
        .map(|f| whole_fragment(f, format!("the fragment is {} bytes, more than a run reads ({})", f.size, config.max_fragment_bytes)))
        .collect();
    if let (true, Some(f), true) = (failing, taken.first(), set_aside.is_empty()) {
        let died = invocations.unwrap_or_default() - 1;
        set_aside.push(whole_fragment(
            f,
            format!("{died} invocations of the run that read this fragment alone died or failed; it is kept, unread"),
        ));
    }
    let mut plan = ReadPlan { taken, set_aside, consolidate: Vec::new(), continue_after };
    let to_read: Vec<&FragmentRow> = plan.to_read().collect();
    let written = output_groups(to_read.iter().copied());
    let room = Room {
        bytes: config.max_run_bytes.saturating_sub(to_read.iter().map(|f| f.size).sum()),
        files: (config.max_fragments as usize).saturating_sub(to_read.len()),
        new_outputs: config.max_outputs.saturating_sub(written.len()),
    };
    plan.consolidate = consolidate::choose(&listing.small_files, &config.consolidation, &written, room);
    Inputs::Read(plan)
}

/// How many of the listed fragments one run takes: within the fragment, byte and output caps,
/// and at least one. Isolated fragments come last in the listing and are taken alone.
fn run_share(listed: &[FragmentRow], config: &RunConfig) -> usize {
    if listed.first().is_some_and(|f| f.isolated) {
        return 1;
    }
    let mut bytes = 0u64;
    let mut outputs = BTreeSet::new();
    let within = listed
        .iter()
        .take(config.max_fragments as usize)
        .take_while(|f| {
            bytes += f.size;
            outputs.extend(f.offsets.iter().map(|o| (&f.period, &o.table_name)));
            !f.isolated && bytes <= config.max_run_bytes && outputs.len() <= config.max_outputs
        })
        .count();
    within.max(listed.len().min(1))
}

/// The (period, table) outputs of these fragments' segments.
fn output_groups<'a>(fragments: impl Iterator<Item = &'a FragmentRow>) -> BTreeSet<(PeriodTag, TableName)> {
    fragments.flat_map(|f| f.offsets.iter().map(|o| (f.period.clone(), o.table_name.clone()))).collect()
}

/// A whole fragment set aside unread, and why.
fn whole_fragment(f: &FragmentRow, error: String) -> Quarantined {
    Quarantined { fragment_key: f.key.clone(), table: "*".into(), error }
}

/// One output to write: what the engine merges into it, and where it goes.
#[derive(Debug, Clone)]
pub struct PlannedOutput {
    pub plan: OutputPlan,
    pub key: String,
}

/// A run's outputs and its merge steps (each a range of consecutive outputs).
#[derive(Debug, Clone)]
pub struct Outputs {
    pub outputs: Vec<PlannedOutput>,
    pub steps: Vec<Range<usize>>,
}

impl Outputs {
    pub fn keys(&self) -> Vec<String> {
        self.outputs.iter().map(|o| o.key.clone()).collect()
    }
}

/// The outputs of run `run_id` over what the read found.
pub fn outputs(scan: &Scan, run_id: &str, config: &RunConfig) -> Outputs {
    let outputs: Vec<PlannedOutput> = bins::plan(scan, &config.engine)
        .into_iter()
        .enumerate()
        .map(|(n, plan)| PlannedOutput { key: output_key(&plan.period, &plan.dataset, &plan.table, run_id, n), plan })
        .collect();
    let steps = merge_steps(outputs.iter().map(|o| o.plan.input_bytes), config.merge_step_bytes);
    Outputs { outputs, steps }
}

/// The deterministic key of output `n` of run `run`.
pub fn output_key(period: &PeriodTag, dataset: &DatasetId, table: &TableName, run: &str, n: usize) -> String {
    format!("battle_compacted/{period}/{dataset}/{table}/{run}-{n}.parquet")
}

/// The outputs of each merge step, given each output's input bytes: consecutive, packed
/// next-fit up to `budget` bytes, at least one per step.
fn merge_steps(input_bytes: impl IntoIterator<Item = u64>, budget: u64) -> Vec<Range<usize>> {
    let mut steps: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (n, size) in input_bytes.into_iter().enumerate() {
        match steps.last_mut() {
            Some(step) if bytes + size <= budget => {
                step.end = n + 1;
                bytes += size;
            }
            _ => {
                steps.push(n..n + 1);
                bytes = size;
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, size: u64, tables: &[&str], isolated: bool) -> FragmentRow {
        FragmentRow {
            key: key.into(),
            table: TableName::parse("port_table").unwrap(),
            period: PeriodTag::parse("2025-11-05").unwrap(),
            size,
            offsets: tables
                .iter()
                .map(|t| TableOffset {
                    table_name: TableName::parse(t).unwrap(),
                    start_byte: 0,
                    byte_length: 20,
                    format: "parquet".into(),
                    num_rows: None,
                })
                .collect(),
            isolated,
        }
    }

    fn listing(fragments: Vec<FragmentRow>) -> Listing {
        Listing { fragments, small_files: Vec::new() }
    }

    /// The keys a run reads and whether it continues, or the keys it isolates.
    fn check(listed: Vec<FragmentRow>, invocations: Option<u64>, config: &RunConfig, expected: Result<(&[&str], bool), &[&str]>) {
        match (inputs(&listing(listed), invocations, config), expected) {
            (Inputs::Read(plan), Ok((keys, more))) => {
                assert_eq!(plan.to_read().map(|f| f.key.as_str()).collect::<Vec<_>>(), keys);
                assert_eq!(plan.continue_after, more);
            }
            (Inputs::Isolate(got), Err(keys)) => assert_eq!(got, keys),
            (got, expected) => panic!("{got:?} against {expected:?}"),
        }
    }

    #[test]
    fn a_run_takes_what_fits_its_caps_and_at_least_one() {
        let three = || vec![row("a", 10, &["battle"], false), row("b", 10, &["battle"], false), row("c", 10, &["battle"], false)];
        check(three(), Some(1), &RunConfig::default(), Ok((&["a", "b", "c"], false)));
        check(three(), Some(1), &RunConfig { max_fragments: 2, ..RunConfig::default() }, Ok((&["a", "b"], true)));
        check(three(), Some(1), &RunConfig { max_run_bytes: 25, ..RunConfig::default() }, Ok((&["a", "b"], true)));
        check(three(), Some(1), &RunConfig { max_run_bytes: 1, ..RunConfig::default() }, Ok((&["a"], true)));
    }

    #[test]
    fn a_run_takes_fragments_within_its_output_cap_and_isolated_ones_alone() {
        let config = RunConfig { max_outputs: 3, ..RunConfig::default() };
        let listed =
            vec![row("a", 10, &["battle", "cells"], false), row("b", 10, &["battle"], false), row("c", 10, &["ships", "slots"], false)];
        check(listed, Some(1), &config, Ok((&["a", "b"], true)));
        check(vec![row("a", 10, &["t1", "t2", "t3", "t4"], false)], Some(1), &config, Ok((&["a"], false)));
        let mixed = || vec![row("a", 10, &["battle"], false), row("b", 10, &["battle"], true), row("c", 10, &["battle"], true)];
        check(mixed(), Some(1), &config, Ok((&["a"], true)));
        check(mixed()[1..].to_vec(), Some(1), &config, Ok((&["b"], true)));
    }

    #[test]
    fn fragments_too_large_or_killing_their_run_are_set_aside() {
        let config = RunConfig { max_fragment_bytes: 100, invocations_before_isolation: 2, ..RunConfig::default() };
        // Too large: consumed, unread.
        let Inputs::Read(plan) =
            inputs(&listing(vec![row("big", 101, &["battle"], false), row("ok", 10, &["battle"], false)]), Some(1), &config)
        else {
            panic!("reads")
        };
        assert_eq!((plan.consumed(), plan.set_aside.len()), (vec!["big".to_string(), "ok".to_string()], 1));
        assert_eq!(plan.to_read().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["ok"]);
        // A run of several whose invocations keep dying isolates them; a lone one is set aside.
        let two = || vec![row("a", 10, &["battle"], false), row("b", 10, &["battle"], false)];
        check(two(), Some(2), &config, Ok((&["a", "b"], false)));
        check(two(), Some(3), &config, Err(&["a", "b"]));
        check(two(), None, &config, Ok((&["a", "b"], false)));
        let Inputs::Read(alone) = inputs(&listing(vec![row("a", 10, &["battle"], true)]), Some(3), &config) else { panic!("reads") };
        assert_eq!(alone.to_read().count(), 0);
        assert!(alone.set_aside[0].error.contains("2 invocations"), "{:?}", alone.set_aside);
    }

    #[test]
    fn consolidation_gets_what_the_fragments_leave() {
        let small = |n: usize, table: &str| SmallFile {
            key: format!("s{n}"),
            period: PeriodTag::parse("2025-11-05").unwrap(),
            table: TableName::parse(table).unwrap(),
            size: 10,
            source_segments: 1,
        };
        let consolidation = consolidate::ConsolidationConfig { fan_in: 2, small_file_bytes: 4 << 20 };
        let config = RunConfig { max_run_bytes: 40, max_outputs: 1, consolidation, ..RunConfig::default() };
        let listed = Listing {
            fragments: vec![row("a", 10, &["battle"], false)],
            small_files: (0..8).map(|n| small(n, "battle")).chain((8..16).map(|n| small(n, "cells"))).collect(),
        };
        let Inputs::Read(plan) = inputs(&listed, Some(1), &config) else { panic!("reads") };
        // 30 bytes left: three battle files (the fragment writes battle); cells would be a new output.
        assert_eq!(plan.consolidate.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["s0", "s1", "s2"]);
    }

    #[test]
    fn merge_steps_pack_consecutive_outputs_within_the_budget() {
        assert_eq!(merge_steps([3, 4, 2, 9, 1, 1], 8), vec![0..2, 2..3, 3..4, 4..6], "an output over the budget is a step alone");
        assert_eq!(merge_steps([3, 4, 2], 0), vec![0..1, 1..2, 2..3]);
        assert_eq!(merge_steps([3, 4, 2], u64::MAX), vec![0..3]);
        assert!(merge_steps([], 8).is_empty());
    }
}
