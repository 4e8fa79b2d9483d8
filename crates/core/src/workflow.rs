//! A durable, Workflow-style step runner, in the manner of Cloudflare Workflows'
//! `step.do(name, config, fn)`: named steps, each with a retry policy and a timeout, whose
//! results are checkpointed so that a run started again with the same id skips the steps it
//! has already done.
//!
//! The runner is generic: a workflow is any async code that calls [`Run::step`]. Storage and
//! time are ports ([`CheckpointStore`], [`Clock`]): the Worker implements them over D1 (the
//! SQL is in [`crate::index`]) and `worker::Delay`; tests over SQLite and a fake clock.
//!
//! Semantics:
//! - A step's output is what was *stored*: the first completion of `(run, step)` wins, and a
//!   duplicate run racing the same step continues with that stored value, never its own.
//! - A failing attempt is retried after the policy's delay, up to `limit` retries; then the
//!   step fails with its name, its attempts and the last error. An attempt that does not finish
//!   within `timeout_ms` counts as failed.
//! - Outputs are JSON; a step must therefore return the same type each time it is asked for.

use std::future::Future;
use std::pin::pin;

use futures_util::future::{Either, select};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use fusou_ports::{Checkpoint, CheckpointStore, Clock, PortError};

/// How delays grow between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Constant,
    Linear,
    Exponential,
}

/// Retries after the first attempt: `limit` of them, waiting `delay_ms` grown by `backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub limit: u32,
    pub delay_ms: u64,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay_before(&self, retry: u32) -> u64 {
        let n = retry.max(1) as u64;
        match self.backoff {
            Backoff::Constant => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(n),
            Backoff::Exponential => self.delay_ms.saturating_mul(1u64 << (n - 1).min(32)),
        }
    }
}

/// A step's retry policy and per-attempt timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepConfig {
    pub retries: RetryPolicy,
    pub timeout_ms: u64,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("step {step} failed after {attempts} attempt(s): {message}")]
    Failed {
        step: String,
        attempts: u32,
        message: String,
        /// The limit the last attempt did not answer within, when that is how it failed (the
        /// step's own timeout, or a remote call's).
        timed_out_ms: Option<u64>,
    },
    #[error("step {step}: the checkpoint store failed: {message}")]
    Store { step: String, message: String },
    #[error("step {step}: its stored output does not decode: {message}")]
    Corrupt { step: String, message: String },
    /// Fault injection: the invocation stopped after `step` (see [`Run::crash_after`]).
    #[error("interrupted after step {step} (injected fault)")]
    Interrupted { step: String },
}

impl StepError {
    /// Step `step` failed at its one attempt, made outside the runner's retries.
    pub fn failed_once(step: impl Into<String>, error: PortError) -> Self {
        StepError::Failed { step: step.into(), attempts: 1, message: error.message, timed_out_ms: error.timed_out_ms }
    }

    /// The limit the step's last attempt waited for, when it failed by a timeout.
    pub fn timed_out_ms(&self) -> Option<u64> {
        match self {
            StepError::Failed { timed_out_ms, .. } => *timed_out_ms,
            _ => None,
        }
    }

    /// The step that failed.
    pub fn step(&self) -> &str {
        match self {
            StepError::Failed { step, .. }
            | StepError::Store { step, .. }
            | StepError::Corrupt { step, .. }
            | StepError::Interrupted { step } => step,
        }
    }
}

/// What one step did in this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub name: String,
    /// `false` when the output came from the checkpoint store.
    pub ran: bool,
    pub attempts: u32,
    /// Time spent on the step, its checkpoint's write included (the checkpoint itself can only
    /// hold the time before its write), so that no step's write falls outside every record.
    pub duration_ms: u64,
}

/// One run of a workflow.
pub struct Run<'a, S, C> {
    id: String,
    store: &'a S,
    clock: &'a C,
    records: Vec<StepRecord>,
    crash_after: Option<String>,
    /// The run's completed steps, read from the store once, at its first step.
    completed: Option<std::collections::HashMap<String, String>>,
}

impl<'a, S: CheckpointStore, C: Clock> Run<'a, S, C> {
    pub fn new(id: impl Into<String>, store: &'a S, clock: &'a C) -> Self {
        Self { id: id.into(), store, clock, records: Vec::new(), crash_after: None, completed: None }
    }

    /// Fault injection for tests: once step `step` has run (and, for a checkpointed step, its
    /// output is stored), the run stops with [`StepError::Interrupted`], without retries, as an
    /// invocation that died right there would. A step restored from its checkpoint does not stop.
    pub fn crash_after(mut self, step: &str) -> Self {
        self.crash_after = Some(step.to_owned());
        self
    }

    fn interrupt(&self, name: &str) -> Result<(), StepError> {
        match &self.crash_after {
            Some(step) if step == name => Err(StepError::Interrupted { step: name.to_owned() }),
            _ => Ok(()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether step `name` is checkpointed as done, as far as this run has read its
    /// checkpoints (they are read at its first step).
    pub fn completed(&self, name: &str) -> bool {
        self.completed.as_ref().is_some_and(|c| c.contains_key(name))
    }

    /// Whether step `name` is checkpointed as done, reading the checkpoints if no step has yet.
    pub async fn has_completed(&mut self, name: &str) -> Result<bool, StepError> {
        if self.completed.is_none() {
            let stored = self.store.outputs(&self.id).await.map_err(|e| StepError::Store { step: name.to_owned(), message: e.message })?;
            self.completed = Some(stored.into_iter().collect());
        }
        Ok(self.completed(name))
    }

    /// The steps this invocation went through, in order.
    pub fn records(&self) -> &[StepRecord] {
        &self.records
    }

    /// Runs `attempt` as step `name` unless it is already done in this run.
    pub async fn step<T, F, Fut>(&mut self, name: &str, config: &StepConfig, attempt: F) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let store_error = |e: PortError| StepError::Store { step: name.to_owned(), message: e.message };
        if self.completed.is_none() {
            let stored = self.store.outputs(&self.id).await.map_err(store_error)?;
            self.completed = Some(stored.into_iter().collect());
        }
        if let Some(saved) = self.completed.as_ref().and_then(|c| c.get(name)) {
            self.records.push(StepRecord { name: name.to_owned(), ran: false, attempts: 0, duration_ms: 0 });
            return decode(name, saved);
        }
        let started = self.clock.now_ms();
        let (value, attempts) = self.attempts(name, config, attempt).await?;
        let completed_at_ms = self.clock.now_ms();
        let duration_ms = completed_at_ms.saturating_sub(started);
        let output = serde_json::to_string(&value).map_err(|e| StepError::Corrupt { step: name.to_owned(), message: e.to_string() })?;
        let checkpoint = Checkpoint { step: name, output: &output, attempts, duration_ms, completed_at_ms };
        let stored = self.store.save(&self.id, &checkpoint).await.map_err(store_error)?;
        let duration_ms = self.clock.now_ms().saturating_sub(started);
        self.records.push(StepRecord { name: name.to_owned(), ran: true, attempts, duration_ms });
        self.interrupt(name)?;
        // Another invocation of this run may have stored the step first: go on from its output.
        if stored == output { Ok(value) } else { decode(name, &stored) }
    }

    /// Runs `attempt` as step `name` with the step's retries and timeout, but without a
    /// checkpoint: for work whose result belongs to this invocation only (taking a lease,
    /// reading bytes that a resumed run reads again).
    pub async fn ephemeral<T, F, Fut>(&mut self, name: &str, config: &StepConfig, attempt: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let started = self.clock.now_ms();
        let (value, attempts) = self.attempts(name, config, attempt).await?;
        let duration_ms = self.clock.now_ms().saturating_sub(started);
        self.records.push(StepRecord { name: name.to_owned(), ran: true, attempts, duration_ms });
        self.interrupt(name)?;
        Ok(value)
    }

    /// Attempts until one succeeds or the retries are spent; answers the value and attempts.
    async fn attempts<T, F, Fut>(&self, name: &str, config: &StepConfig, mut attempt: F) -> Result<(T, u32), StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.with_timeout(attempt(), config.timeout_ms).await {
                Ok(value) => return Ok((value, attempts)),
                Err(PortError { message, timed_out_ms }) if attempts > config.retries.limit => {
                    return Err(StepError::Failed { step: name.to_owned(), attempts, message, timed_out_ms });
                }
                Err(_) => self.clock.sleep(config.retries.delay_before(attempts)).await,
            }
        }
    }

    async fn with_timeout<T>(&self, attempt: impl Future<Output = Result<T, PortError>>, timeout_ms: u64) -> Result<T, PortError> {
        match select(pin!(attempt), pin!(self.clock.sleep(timeout_ms))).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(_) => Err(PortError::timed_out(format!("timed out after {timeout_ms} ms"), timeout_ms)),
        }
    }
}

fn decode<T: DeserializeOwned>(step: &str, stored: &str) -> Result<T, StepError> {
    serde_json::from_str(stored).map_err(|e| StepError::Corrupt { step: step.to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests;
