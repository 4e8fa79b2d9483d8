//! The ports: what the pipeline asks of its platform, as traits, with one typed error.
//!
//! This crate owns the storage, catalog and clock traits that the core, the lake and the
//! compaction run are generic over ([`Sql`], [`Blobs`], [`DatasetRegistry`], [`Clock`],
//! [`CheckpointStore`]), the values a statement binds ([`SqlValue`], [`Statement`]), and
//! [`PortError`], which keeps a remote call's timeout beside its message so that it reaches a
//! run's error and its metrics row. The Workers implement the ports over D1, R2, Supabase and
//! `worker::Delay`; the tests over SQLite and memory (`fusou-testing`). It never does I/O
//! itself and depends on no other crate of the workspace.

use std::fmt::Display;

use bytes::Bytes;
use serde::de::DeserializeOwned;

pub mod meter;
pub mod settings;
mod sql;

pub use sql::{KEYS_PER_STATEMENT, SqlValue, Statement, keyed, text};

/// Why a port's call failed: what it said, and whether it was a timeout (a remote that did not
/// answer within its limit), which callers report apart from an error the remote answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// What failed, as the remote or the work said it.
    pub message: String,
    /// The limit the call did not answer within, when that is why it failed.
    pub timed_out_ms: Option<u64>,
}

impl PortError {
    /// A call that answered with an error (or work that failed on its own).
    pub fn new(message: impl Display) -> Self {
        Self { message: message.to_string(), timed_out_ms: None }
    }

    /// A call that did not answer within `ms`.
    pub fn timed_out(message: impl Display, ms: u64) -> Self {
        Self { message: message.to_string(), timed_out_ms: Some(ms) }
    }

    /// The same failure, its message prefixed with what was being done.
    pub fn context(self, what: impl Display) -> Self {
        Self { message: format!("{what}: {}", self.message), ..self }
    }
}

impl From<String> for PortError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for PortError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// A port's answer.
pub type PortResult<T> = Result<T, PortError>;

/// SQL on the battle-data index (D1 in the Worker, SQLite in tests).
#[allow(async_fn_in_trait)] // Workers are single-threaded: no `Send` bound is wanted.
pub trait Sql {
    /// Every row a statement answers, decoded as `T`.
    async fn query<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> PortResult<Vec<T>>;
    /// Runs one statement; answers the rows it changed.
    async fn run(&self, sql: &str, params: &[SqlValue]) -> PortResult<u64>;
    /// Runs statements atomically; answers each one's changed rows.
    async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>>;
}

/// Object storage (R2 in the Worker, memory in tests).
#[allow(async_fn_in_trait)]
pub trait Blobs {
    /// An object's bytes, or `None` when there is no object under `key`.
    async fn get(&self, key: &str) -> PortResult<Option<Bytes>>;
    /// Stores `bytes` under `key`, replacing any object there.
    async fn put(&self, key: &str, bytes: Bytes) -> PortResult<()>;
    /// Starts a multipart upload; answers its id.
    async fn create_multipart(&self, key: &str) -> PortResult<String>;
    /// Uploads part `number` (from 1); answers its etag.
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> PortResult<String>;
    /// Completes a multipart upload from its parts' numbers and etags.
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> PortResult<()>;
    /// Abandons a multipart upload.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> PortResult<()>;
    /// Deletes up to 1,000 objects; a key with no object is not an error.
    async fn delete(&self, keys: &[String]) -> PortResult<()>;
}

/// The registry of datasets that users see (Supabase's `datasets` in the Worker). Not to be
/// confused with the lake's Iceberg REST catalog, which serves tables to readers.
#[allow(async_fn_in_trait)]
pub trait DatasetRegistry {
    /// Makes sure the registry has dataset `dataset` of `owner` (an upload made while it was
    /// down may have left it out); fails when it cannot be reached.
    async fn ensure_dataset(&self, dataset: &str, owner: &str) -> PortResult<()>;
}

/// Time, for delays, timeouts and durations.
#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Waits `ms` milliseconds.
    async fn sleep(&self, ms: u64);
}

/// Where a step runner keeps completed steps.
#[allow(async_fn_in_trait)]
pub trait CheckpointStore {
    /// The stored outputs of a run's completed steps, as (step, output).
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>>;
    /// Stores a completed step unless one is stored already (the first write wins), and answers
    /// the stored output: one round trip.
    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String>;
}

/// A completed step, as a store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    /// The step's name, unique within its run.
    pub step: &'a str,
    /// The step's value, as JSON.
    pub output: &'a str,
    /// Attempts the step took (1 when the first succeeded).
    pub attempts: u32,
    /// Time the step took, in ms.
    pub duration_ms: u64,
    /// Unix ms, by the run's clock (the clean-up forgets finished runs by it).
    pub completed_at_ms: u64,
}
