//! The steps of a compaction run, by name. The names are a stored contract: checkpoints are
//! keyed by them (`workflow_steps.step`), the metrics store them (`step_durations_ms`,
//! `error_step`), the test stack's fault injection names them, and operators read them in logs.
//! A renamed step would make a resumed run redo it, and old metrics unreadable: the test below
//! keeps every name as it is.

use std::fmt;
use std::ops::Range;

/// One step of a run, in the order a run takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take the lease and make sure the catalog knows the dataset (not checkpointed).
    ValidateDataset,
    /// The pending fragments, a run's share and one more (checkpointed).
    ListFragments,
    /// The small compacted files consolidation may merge again (checkpointed).
    ListSmallFiles,
    /// Every input read and scanned (not checkpointed: a resumed run reads them again).
    ReadFragments,
    /// Every output key recorded before its first byte (checkpointed).
    StageOutputs,
    /// Outputs `outputs.start` to `outputs.end - 1` merged and written (checkpointed).
    Merge { outputs: Range<usize> },
    /// The fenced metadata commit (checkpointed): the run's last step. Its files wait there,
    /// pending, for the open tables' committer.
    UpdateMetadata,
}

impl Step {
    /// The step's stored name.
    pub fn name(&self) -> String {
        match self {
            Step::ValidateDataset => "validate-dataset".into(),
            Step::ListFragments => "list-fragments".into(),
            Step::ListSmallFiles => "list-small-files".into(),
            Step::ReadFragments => "read-fragments".into(),
            Step::StageOutputs => "stage-outputs".into(),
            Step::Merge { outputs } => format!("merge-{}-{}", outputs.start, outputs.end - 1),
            Step::UpdateMetadata => "update-metadata".into(),
        }
    }

    /// What the metrics sum a step's time under: every merge step as `merge`.
    /// One step of each kind, in the order a run takes them.
    pub fn each_kind() -> [Step; 7] {
        [
            Step::ValidateDataset,
            Step::ListFragments,
            Step::ListSmallFiles,
            Step::ReadFragments,
            Step::StageOutputs,
            Step::Merge { outputs: 0..1 },
            Step::UpdateMetadata,
        ]
    }

    pub fn kind(name: &str) -> &str {
        if name.starts_with("merge-") { "merge" } else { name }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_never_change() {
        let mut steps = Step::each_kind().to_vec();
        steps.insert(6, Step::Merge { outputs: 3..32 });
        let names: Vec<String> = steps.iter().map(Step::name).collect();
        assert_eq!(
            names,
            [
                "validate-dataset",
                "list-fragments",
                "list-small-files",
                "read-fragments",
                "stage-outputs",
                "merge-0-0",
                "merge-3-31",
                "update-metadata"
            ]
        );
        assert_eq!(Step::kind("merge-3-31"), "merge");
        assert_eq!(Step::kind("stage-outputs"), "stage-outputs");
    }

    /// The steps docs/reference.md lists for a run: each numbered item of its Compaction
    /// section names its steps in backticks before its first colon.
    #[test]
    fn the_reference_lists_every_step_in_order() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reference.md")).unwrap();
        let section = doc.split_once("\n## Compaction\n").expect("a Compaction section").1;
        let mut listed = Vec::new();
        for item in section
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        {
            let head = item.split_once(':').map_or(item, |(h, _)| h);
            listed.extend(head.split('`').skip(1).step_by(2).map(|name| Step::kind(name).to_owned()));
        }
        let kinds: Vec<String> = Step::each_kind().iter().map(|s| Step::kind(&s.name()).to_owned()).collect();
        assert_eq!(listed, kinds, "docs/reference.md's steps of a run");
    }
}
