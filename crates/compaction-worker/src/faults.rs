//! Fault injection for the end-to-end tests. Only with `TEST_HOOKS=on` (which the production
//! configuration refuses), rows of the D1 table `fault_injections (dataset_id, step)`, which only
//! the tests create, act on that dataset's runs:
//! - `step` names a step: the next run stops right after it, as an invocation that crashed there
//!   would. Each such row is used once.
//! - `step` is `poison:<fragment key>`: every invocation that would read that fragment dies
//!   before reading it, as one that a poisonous fragment kills would. Never used up.

use fusou_contract::ids::DatasetId;
use fusou_core::index;
use fusou_edge::d1::Db;

use crate::context::Ctx;

/// The faults armed for a run of one dataset.
#[derive(Debug, Default)]
pub(crate) struct Armed {
    pub crash_after: Option<String>,
    pub poison: Option<String>,
}

const POISON: &str = "poison:";

/// The faults armed for this run of `dataset`.
pub(crate) async fn armed(ctx: &Ctx, db: &Db, dataset: &DatasetId) -> Armed {
    if !ctx.shared.platform.test_hooks {
        return Armed::default();
    }
    // No table: no fault.
    let faults: Vec<index::Fault> = db.all(index::FAULTS_ARMED, &[dataset.as_str().into()]).await.unwrap_or_default();
    let (poison, crashes): (Vec<_>, Vec<_>) = faults.into_iter().map(|f| f.step).partition(|s| s.starts_with(POISON));
    Armed { crash_after: crashes.into_iter().next(), poison: poison.into_iter().next().map(|p| p[POISON.len()..].to_owned()) }
}

/// Uses up the crash that fired.
pub(crate) async fn fired(db: &Db, dataset: &DatasetId, step: &str) {
    let _ = db.run(index::FAULT_FIRED, &[dataset.as_str().into(), step.into()]).await;
}
