//! Everything the compaction Worker needs from `Env`, read in one place and as strictly as the
//! upload Worker reads its own: a malformed setting is an error, never a silent default (the
//! defaults are the settings registry's, `fusou_ports::settings`).

use std::ops::Deref;

use fusou_compaction::CompactionSettings;
use fusou_compaction::RunConfig;
use fusou_compaction::cleanup::CleanupConfig;
use fusou_core::config::ConfigError;
use fusou_edge::context::WorkerEnv;
use worker::Env;

/// An invocation's context: the shared one ([`WorkerEnv`]) and the compaction settings.
pub(crate) struct Ctx {
    worker: WorkerEnv,
    /// How a run is bounded and retried.
    pub run: RunConfig,
    /// What the clean-up keeps.
    pub cleanup: CleanupConfig,
    /// The delay before a failed message is delivered again (`COMPACTION_RETRY_DELAY_SECONDS`).
    pub retry_delay_secs: u32,
    /// Runs of different datasets a batch runs side by side (`COMPACTION_CONCURRENT_RUNS`).
    pub concurrent_runs: usize,
}

impl Deref for Ctx {
    type Target = WorkerEnv;

    fn deref(&self) -> &WorkerEnv {
        &self.worker
    }
}

/// Why the Worker cannot run: a setting is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("the compaction service is misconfigured: {0}")]
pub(crate) struct Misconfigured(pub String);

impl From<ConfigError> for Misconfigured {
    fn from(e: ConfigError) -> Self {
        Self(e.to_string())
    }
}

impl Ctx {
    /// Reads the settings.
    pub(crate) fn load(env: Env) -> Result<Self, Misconfigured> {
        let (worker, settings) = WorkerEnv::load(env, CompactionSettings::from_vars)?;
        let CompactionSettings { run, cleanup, retry_delay_secs, concurrent_runs } = settings;
        Ok(Self { worker, run, cleanup, retry_delay_secs, concurrent_runs })
    }
}
