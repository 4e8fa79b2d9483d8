//! Which small compacted files a run merges again, so that a dataset's files grow large over
//! time instead of one small file per table per run.
//!
//! Size-tiered, as in LSM stores: a file's tier is the power of `fan_in` its size falls in
//! (tier 0 below [`TIER_BASE_BYTES`] × `fan_in`, tier 1 below that × `fan_in`, and so on). When
//! one (period, table) has at least `fan_in` files in one tier, a run takes them into its output
//! for that table, which lands in the same tier or a higher one. A byte is so rewritten a few
//! times per tier, not once per run: over 2,000 runs of one table with the defaults (the test
//! `each_byte_is_rewritten_a_few_times_and_files_stay_few`), each byte is written 4.3 times in
//! all and 16 files remain when a run adds 20 KiB, 1.9 times and 224 files of about 9 MiB when
//! it adds 1 MiB; without consolidation, 2,000 files. Files of `small_file_bytes` or more are
//! left alone: a run holds its inputs whole in memory.
//!
//! Pure and deterministic: the same listing and budget give the same choice, so a resumed run
//! plans the same outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use fusou_contract::ids::{PeriodTag, TableName};

/// Files below this times `fan_in` are tier 0.
pub const TIER_BASE_BYTES: u64 = 64 << 10;

/// How compacted files are consolidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsolidationConfig {
    /// Files of one tier merged at once, and the size ratio between tiers (default 8). Below 2,
    /// nothing is consolidated.
    pub fan_in: usize,
    /// Files of this size or more are never merged again (default 4 MiB, so that a merge of
    /// `fan_in` of them stays within a run's 32 MiB of input).
    pub small_file_bytes: u64,
}

impl Default for ConsolidationConfig {
    fn default() -> Self {
        Self { fan_in: 8, small_file_bytes: 4 << 20 }
    }
}

/// A live compacted file smaller than `small_file_bytes`, as `list-small-files` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallFile {
    pub key: String,
    #[serde(alias = "period_tag")]
    pub period: PeriodTag,
    #[serde(alias = "table_name")]
    pub table: TableName,
    pub size: u64,
    /// Fragment segments whose rows the file holds.
    pub source_segments: u64,
}

/// The tier of a file of `size` bytes.
pub fn tier(size: u64, fan_in: usize) -> u32 {
    let fan_in = fan_in.max(2) as u64;
    let mut bound = TIER_BASE_BYTES.saturating_mul(fan_in);
    let mut tier = 0;
    while size >= bound && bound < u64::MAX {
        tier += 1;
        bound = bound.saturating_mul(fan_in);
    }
    tier
}

/// What a run leaves for consolidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Input bytes (what the run's fragments leave of its byte cap).
    pub bytes: u64,
    /// Input files (what its fragments leave of its count cap).
    pub files: usize,
    /// Outputs of tables its fragments do not already write (what they leave of its output cap).
    pub new_outputs: usize,
}

impl Room {
    /// Room for `bytes` and nothing else bounded.
    pub fn bytes(bytes: u64) -> Self {
        Self { bytes, files: usize::MAX, new_outputs: usize::MAX }
    }
}

/// The files to merge, from `files` (oldest first), within `room`: per (period, table) and
/// tier, in that order, every tier with at least `fan_in` files gives its oldest files, as many
/// as the room leaves space for, if that is still `fan_in` or more. A (period, table) outside
/// `written` (those the run's fragments write anyway) takes one of the room's new outputs.
pub fn choose(
    files: &[SmallFile],
    config: &ConsolidationConfig,
    written: &BTreeSet<(PeriodTag, TableName)>,
    mut room: Room,
) -> Vec<SmallFile> {
    if config.fan_in < 2 {
        return Vec::new();
    }
    let mut tiers: BTreeMap<(&PeriodTag, &TableName, u32), Vec<&SmallFile>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.size < config.small_file_bytes) {
        tiers.entry((&f.period, &f.table, tier(f.size, config.fan_in))).or_default().push(f);
    }
    let mut chosen: Vec<SmallFile> = Vec::new();
    let mut new_groups: BTreeSet<(&PeriodTag, &TableName)> = BTreeSet::new();
    for ((period, table, _), members) in tiers.into_iter().filter(|(_, m)| m.len() >= config.fan_in) {
        let new_group = !written.contains(&(period.clone(), table.clone())) && !new_groups.contains(&(period, table));
        if new_group && new_groups.len() >= room.new_outputs {
            continue;
        }
        let mut bytes = 0;
        let fit: Vec<&SmallFile> = members
            .iter()
            .take(room.files)
            .take_while(|f| {
                bytes += f.size;
                bytes <= room.bytes
            })
            .copied()
            .collect();
        if fit.len() >= config.fan_in {
            room.bytes -= fit.iter().map(|f| f.size).sum::<u64>();
            room.files -= fit.len();
            if new_group {
                new_groups.insert((period, table));
            }
            chosen.extend(fit.into_iter().cloned());
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize, table: &str, size: u64) -> SmallFile {
        SmallFile {
            key: format!("k{n:03}"),
            period: PeriodTag::parse("2025-11-05").unwrap(),
            table: TableName::parse(table).unwrap(),
            size,
            source_segments: 1,
        }
    }

    fn keys(files: &[SmallFile]) -> Vec<&str> {
        files.iter().map(|f| f.key.as_str()).collect()
    }

    /// `choose` bounded by bytes only.
    fn choose_in(files: &[SmallFile], config: &ConsolidationConfig, bytes: u64) -> Vec<SmallFile> {
        choose(files, config, &BTreeSet::new(), Room::bytes(bytes))
    }

    const KIB: u64 = 1024;

    #[test]
    fn tiers_grow_by_the_fan_in() {
        assert_eq!(tier(0, 8), 0);
        assert_eq!(tier(512 * KIB - 1, 8), 0);
        assert_eq!(tier(512 * KIB, 8), 1);
        assert_eq!(tier(4096 * KIB - 1, 8), 1);
        assert_eq!(tier(4096 * KIB, 8), 2);
        assert_eq!(tier(u64::MAX, 8), 15, "no overflow");
    }

    #[test]
    fn a_tier_is_merged_once_it_holds_fan_in_files() {
        let config = ConsolidationConfig { fan_in: 3, small_file_bytes: 4 << 20 };
        let two: Vec<SmallFile> = (0..2).map(|n| file(n, "battle", 10 * KIB)).collect();
        assert!(choose_in(&two, &config, u64::MAX).is_empty(), "two files of one tier wait for a third");
        let three: Vec<SmallFile> = (0..3).map(|n| file(n, "battle", 10 * KIB)).collect();
        assert_eq!(keys(&choose_in(&three, &config, u64::MAX)), ["k000", "k001", "k002"]);
    }

    #[test]
    fn files_of_different_tiers_tables_or_sizes_are_not_merged_together() {
        let config = ConsolidationConfig { fan_in: 3, small_file_bytes: 1 << 20 };
        let files = vec![
            file(0, "battle", 10 * KIB),
            file(1, "battle", 10 * KIB),
            file(2, "battle", 500 * KIB), // tier 1 (≥ 192 KiB)
            file(3, "cells", 10 * KIB),
            file(4, "battle", 2 << 20), // not small
            file(5, "battle", 2 << 20),
            file(6, "battle", 2 << 20),
        ];
        assert!(choose_in(&files, &config, u64::MAX).is_empty());
    }

    #[test]
    fn the_budget_takes_the_oldest_files_and_never_fewer_than_fan_in() {
        let config = ConsolidationConfig { fan_in: 2, small_file_bytes: 4 << 20 };
        let files: Vec<SmallFile> = (0..5).map(|n| file(n, "battle", 10 * KIB)).collect();
        assert_eq!(keys(&choose_in(&files, &config, 35 * KIB)), ["k000", "k001", "k002"]);
        assert!(choose_in(&files, &config, 15 * KIB).is_empty(), "one file alone is not worth a merge");
        let other: Vec<SmallFile> = files.iter().cloned().chain((5..7).map(|n| file(n, "cells", 10 * KIB))).collect();
        assert_eq!(keys(&choose_in(&other, &config, 55 * KIB)), ["k000", "k001", "k002", "k003", "k004"], "battle sorts first");
        assert_eq!(keys(&choose_in(&other, &config, 70 * KIB)), ["k000", "k001", "k002", "k003", "k004", "k005", "k006"]);
    }

    /// Runs of one table, each adding `new` bytes and merging what `choose` picks (an output as
    /// large as its inputs); answers (bytes written / bytes added, live files, largest file).
    fn simulate(runs: usize, new: u64, config: &ConsolidationConfig) -> (f64, usize, u64) {
        let mut live: Vec<SmallFile> = Vec::new();
        let (mut added, mut written) = (0u64, 0u64);
        for n in 0..runs {
            let chosen = choose_in(&live, config, 32 << 20);
            live.retain(|f| !chosen.contains(f));
            let size = new + chosen.iter().map(|f| f.size).sum::<u64>();
            live.push(file(n, "battle", size));
            added += new;
            written += size;
        }
        (written as f64 / added as f64, live.len(), live.iter().map(|f| f.size).max().unwrap_or(0))
    }

    #[test]
    fn each_byte_is_rewritten_a_few_times_and_files_stay_few() {
        let config = ConsolidationConfig::default();
        // A run's new rows of one table: a burst of a few battles (~20 KiB) or a full run's
        // share of 32 MiB (~1 MiB).
        for new in [20 * KIB, 1 << 20] {
            let (amplification, files, largest) = simulate(2000, new, &config);
            let total = 2000 * new;
            assert!(amplification < 6.0, "{new} B a run: each byte written {amplification:.1} times");
            assert!(files as u64 <= total / config.small_file_bytes + 2 * config.fan_in as u64, "{new} B a run: {files} files");
            assert!(largest >= config.small_file_bytes, "{new} B a run: files grow past the small size ({largest} B)");
        }
        let (amplification, files, _) = simulate(2000, 20 * KIB, &ConsolidationConfig { fan_in: 0, ..config });
        assert_eq!((amplification, files), (1.0, 2000), "without consolidation: one file a run");
    }

    #[test]
    fn files_and_new_outputs_are_bounded_by_the_room() {
        let config = ConsolidationConfig { fan_in: 2, small_file_bytes: 4 << 20 };
        let files: Vec<SmallFile> = (0..4).map(|n| file(n, "battle", 10 * KIB)).chain((4..7).map(|n| file(n, "cells", 10 * KIB))).collect();
        let room = |files, new_outputs| Room { bytes: u64::MAX, files, new_outputs };
        let none = BTreeSet::new();
        assert_eq!(keys(&choose(&files, &config, &none, room(3, 9))), ["k000", "k001", "k002"], "three files at most");
        assert_eq!(keys(&choose(&files, &config, &none, room(9, 1))), ["k000", "k001", "k002", "k003"], "one new output: battle's");
        assert!(choose(&files, &config, &none, room(9, 0)).is_empty(), "no new output");
        let cells = BTreeSet::from([(PeriodTag::parse("2025-11-05").unwrap(), TableName::parse("cells").unwrap())]);
        assert_eq!(keys(&choose(&files, &config, &cells, room(9, 0))), ["k004", "k005", "k006"], "cells is written anyway");
    }

    #[test]
    fn a_fan_in_below_two_turns_consolidation_off() {
        let files: Vec<SmallFile> = (0..9).map(|n| file(n, "battle", 10 * KIB)).collect();
        assert!(choose_in(&files, &ConsolidationConfig { fan_in: 1, small_file_bytes: 4 << 20 }, u64::MAX).is_empty());
    }
}
