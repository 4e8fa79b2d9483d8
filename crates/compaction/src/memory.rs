//! The memory that runs sharing one Worker invocation hold at once.
//!
//! A queue batch's runs are small and spend their time waiting on R2 and D1, so the consumer
//! runs different datasets' runs side by side. What bounds them together is memory: a run holds
//! its inputs whole while it merges them, and a Worker has 128 MB. So each run, once it knows
//! what it reads ([`crate::plan::ReadPlan::bytes`]), holds a share of one [`MemoryBudget`] from
//! before its first read to its end, and waits while the others hold too much. A run that would
//! need more than the whole budget holds all of it: it runs alone, as every run did before.
//!
//! A run that reads beside others and dies cannot tell whether its own bytes killed the
//! invocation or a batch-mate's did. So the budget also says whether runs read alone; only an
//! invocation that read alone counts towards [`crate::RunConfig::invocations_before_isolation`],
//! and the consumer runs a message whose run was interrupted alone next time (see
//! `fusou_core::message::BatchPlan`).

use tokio::sync::{Semaphore, SemaphorePermit};

/// What a run holds beyond twice its input: the engine's buffers for its outputs, whatever
/// their size. Twice the input covers the input itself and what is decoded and encoded from it:
/// a run of 32 MiB of fragments stays under 64 MiB of Wasm memory (`scripts/bench-worker.sh`).
pub const RUN_BASE_BYTES: u64 = 4 << 20;

/// The budget is kept in KiB: a semaphore's permits are counted in `u32`.
const UNIT: u64 = 1024;

/// The memory runs share, in bytes, and whether they read side by side.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Semaphore,
    total: u32,
    shared: bool,
}

/// A run's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Held<'a>(#[allow(dead_code)] SemaphorePermit<'a>);

impl MemoryBudget {
    /// For runs that read one at a time: each holds what it needs, and its invocations count.
    pub fn alone(total_bytes: u64) -> Self {
        Self::new(total_bytes, false)
    }

    /// For runs that read side by side, `total_bytes` between them.
    pub fn shared(total_bytes: u64) -> Self {
        Self::new(total_bytes, true)
    }

    fn new(total_bytes: u64, shared: bool) -> Self {
        let total = (total_bytes / UNIT).clamp(1, u64::from(u32::MAX).min(Semaphore::MAX_PERMITS as u64)) as u32;
        Self { permits: Semaphore::new(total as usize), total, shared }
    }

    /// Whether runs read alone, so that an invocation that dies reading died of its own bytes.
    pub fn reads_alone(&self) -> bool {
        !self.shared
    }

    /// What a run that reads `input_bytes` holds: twice them and [`RUN_BASE_BYTES`].
    pub fn need(input_bytes: u64) -> u64 {
        RUN_BASE_BYTES.saturating_add(input_bytes.saturating_mul(2))
    }

    /// Waits until the run that reads `input_bytes` can hold what it needs (all of the budget
    /// at most), first come first served, and holds it.
    pub async fn hold(&self, input_bytes: u64) -> Held<'_> {
        let units = Self::need(input_bytes).div_ceil(UNIT).min(u64::from(self.total)) as u32;
        // The semaphore is never closed, so acquiring only waits.
        Held(self.permits.acquire_many(units).await.expect("the budget's semaphore is never closed"))
    }

    /// Bytes not held now.
    pub fn free(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn runs_wait_for_memory_in_turn_and_a_run_larger_than_the_budget_holds_all_of_it() {
        let budget = MemoryBudget::shared(64 << 20);
        assert!(!budget.reads_alone());
        let small = budget.hold(1 << 20).now_or_never().expect("room for a small run");
        assert_eq!(budget.free(), (64 << 20) - MemoryBudget::need(1 << 20));
        let mut large = Box::pin(budget.hold(30 << 20));
        assert!((&mut large).now_or_never().is_none(), "a run of 30 MiB needs 64 MiB: it waits");
        // First come, first served: a small run behind the waiting one waits too.
        let mut behind = Box::pin(budget.hold(1 << 10));
        assert!((&mut behind).now_or_never().is_none(), "no run overtakes one that waits");
        drop(small);
        let large = (&mut large).now_or_never().expect("the budget is free again");
        assert_eq!(budget.free(), 0);
        assert!((&mut behind).now_or_never().is_none());
        drop(large);
        drop((&mut behind).now_or_never().expect("and then the next"));
        // A run that needs more than the whole budget holds all of it instead of waiting forever.
        let all = budget.hold(1 << 30).now_or_never().expect("alone");
        assert_eq!(budget.free(), 0);
        drop(all);
        assert_eq!(budget.free(), 64 << 20);
        assert!(MemoryBudget::alone(64 << 20).reads_alone());
    }
}
