//! Period roll-ups in the tables: a roll-up job (the compaction crate's) rewrites a table's
//! files of one period, across datasets, into a few large files and records them with the files
//! they hold (`lake_rollups`, `lake_rollup_members`). The committer lists them in the table's
//! next snapshot, in place of those files: a `replace` snapshot, its rows unchanged. The
//! per-dataset files stay where they are, for their owners; the table no longer lists them.
//!
//! Roll-up files are written in the period-only spec ([`PartitionSpec::by_period`]): they hold
//! many datasets, so their partition tuple is the period alone, and their `dataset_id` bounds
//! (each output holds whole datasets, in order) still prune a one-dataset lookup.
//!
//! Whatever happens to the files a roll-up holds, every row is listed once:
//! - **A roll-up is listed only if the files it holds are as it read them**: each still listed
//!   and live, and every file covered by a roll-up it supersedes among them
//!   ([`fusou_core::index::LAKE_ROLLUPS_PENDING`]'s `stale` and `outside`). Else it is refused
//!   and its files become garbage. The check and the snapshot rest on one pointer, and the marks
//!   are fenced by it, so the check cannot go stale before the swap.
//! - **A newer roll-up of the period supersedes the older**: it holds every file the older one
//!   covers, and the snapshot that lists it removes the older one.
//! - **A covered file retired by consolidation takes its roll-up apart**: the snapshot that
//!   removes the retired file (and adds the consolidation's output) also removes the roll-up
//!   and lists each other file it covered on its own again, until the next roll-up.
//!
//! At most one new roll-up is listed per table commit, so two jobs' roll-ups of one period never
//! both cover a file: the second is then checked against the first.

use serde::{Deserialize, Serialize};

use super::layout::PartitionSpec;
use super::schema::Column;
use fusou_core::index::{LakeRollup, RollupInput};

/// One output file of a roll-up, as `lake_rollups.files` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupFile {
    pub key: String,
    pub rows: i64,
    pub size: i64,
    /// Its columns with their statistics, as a compacted file's.
    pub columns: Vec<Column>,
}

/// A roll-up's files, decoded from its row.
pub fn files_of(rollup: &LakeRollup) -> Result<Vec<RollupFile>, String> {
    serde_json::from_str(&rollup.files).map_err(|e| format!("roll-up {}: its files do not decode: {e}", rollup.id))
}

/// A roll-up the table lists that this commit removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaving {
    pub id: String,
    pub period: String,
    pub files: Vec<RollupFile>,
    /// Taken apart (a file it covers was retired): the files it covers are listed on their own
    /// again. Otherwise a new roll-up supersedes it and covers them.
    pub taken_apart: bool,
}

/// A new roll-up this commit lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Arriving {
    pub id: String,
    pub period: String,
    pub files: Vec<RollupFile>,
    /// The files it holds that the table lists on their own (removed by this commit); the
    /// others are covered by the roll-ups it supersedes.
    pub replaces: Vec<RollupInput>,
}

/// What roll-ups change in one table commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupChanges {
    pub leaving: Vec<Leaving>,
    /// Files listed on their own again: those the roll-ups taken apart covered, but the ones
    /// this commit removes.
    pub uncovered: Vec<RollupInput>,
    pub arriving: Option<Arriving>,
    /// Roll-ups refused, with why, and their files (garbage at once).
    pub refused: Vec<(String, String, Vec<RollupFile>)>,
}

impl RollupChanges {
    pub fn is_empty(&self) -> bool {
        self.leaving.is_empty() && self.arriving.is_none() && self.refused.is_empty()
    }
}

/// The spec roll-up files are listed in.
pub fn spec() -> PartitionSpec {
    PartitionSpec::by_period()
}
