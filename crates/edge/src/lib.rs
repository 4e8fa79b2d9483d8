//! What both FUSOU Workers share on top of workers-rs: the shared context ([`context`]: settings,
//! bindings, the operator check), the binding names, one way to log, every remote call behind a
//! timeout ([`remote`]), D1 ([`d1`]) and the Supabase REST client. Decisions stay in the plain
//! crates below it; this crate only performs I/O.

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

pub mod context;
pub mod d1;
pub mod log;
pub mod remote;
pub mod supabase;

/// Binding names, as in both wrangler configs.
pub mod bindings {
    pub const BATTLE_DATA_BUCKET: &str = "BATTLE_DATA_BUCKET";
    pub const BATTLE_INDEX_DB: &str = "BATTLE_INDEX_DB";
    pub const COMPACTION_QUEUE: &str = "COMPACTION_QUEUE";
    pub const COMPACTION_SERVICE: &str = "COMPACTION_SERVICE";
    /// The open tables' committer (a Durable Object of the compaction Worker).
    pub const LAKE_COMMITTER: &str = "LAKE_COMMITTER";
}

/// Milliseconds since the Unix epoch, from the Worker's clock.
pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// The Worker's clock and timers, for the core's step runner and [`fusou_core::measure::Busy`].
pub struct WorkerClock;

impl fusou_ports::Clock for WorkerClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    async fn sleep(&self, ms: u64) {
        worker::Delay::from(std::time::Duration::from_millis(ms)).await;
    }
}

/// The current time, from the Worker's clock.
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms() as i64).expect("the clock is in range")
}

/// A Worker's variable or secret, `None` when unset or blank.
pub fn var(env: &worker::Env, name: &str) -> Option<String> {
    env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok().filter(|v| !v.trim().is_empty())
}

/// The settings both Workers read ([`fusou_core::config::Platform`]) as [`remote::Remote`].
pub fn remote(platform: &fusou_core::config::Platform) -> remote::Remote {
    remote::Remote {
        remote_timeout_ms: platform.remote_timeout_ms,
        binding_timeout_ms: platform.binding_timeout_ms,
        injected_latency_ms: platform.injected_latency_ms,
    }
}
