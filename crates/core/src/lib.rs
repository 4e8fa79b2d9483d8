//! The FUSOU pipeline core.
//!
//! Everything the two Workers decide lives here as plain Rust: the contracts with the FUSOU
//! client and between the services, validation of everything that reaches a storage key or a
//! query, and verification of Supabase user tokens. The crate knows nothing of workers-rs and
//! does no I/O: time, keys and bytes are passed in, so it tests natively and builds for wasm32.
//!
//! - [`ids`]: the identifiers that reach storage keys and queries (dataset, table, period).
//! - [`workflow`]: a durable step runner (`step(name, config, fn)`), storage and time as ports.
//! - `engine` (feature `engine`): the compaction engine (cut, group, plan, merge).
//! - [`fragment`]: the fragment format: declared segments (`table_offsets`) and their checks.
//! - [`index`]: the SQL the Workers run on D1, as named statements.
//! - [`log`]: the one structured log-line convention of both Workers.
//! - [`measure`]: figures of the work itself: a counting allocator (peak heap), the Wasm
//!   memory's size, a future's own execution time (`Busy`).
//! - [`message`]: [`message::CompactionMessage`], the one queue message every producer sends.
//! - `metrics` (feature `engine`): a run's `processing_metrics` row as a type, built from its outcome.
//! - [`auth`]: Supabase access-token verification against a JWK set (or a legacy HS256 secret; feature `jwt`).
//! - [`supabase`]: the PostgREST calls the Workers make, as data.
//! - `compaction` (feature `engine`): the compaction workflow on the step runner, over ports.
//! - [`commit`]: a compaction run's fenced, atomic metadata commit, as a statement batch.
//! - `cleanup` (feature `engine`): the cron's clean-up: expired leases, orphan outputs, retention.
//! - [`lake`]: the open tables (Apache Iceberg) over the compacted files: the table commit
//!   (feature `engine`) and the REST catalog's answers.
//! - [`config`]: deployment settings from Worker variables.
//! - [`upload`]: the two-phase upload: the handshake, storage keys, the signed upload grant.
//! - `synth` (feature `synth`): deterministic fragments shaped like the client's tables.
//! - `signing` (feature `signing`): an ES256 key that mints such tokens, for the local stand-in.

pub mod auth;
#[cfg(feature = "engine")]
pub mod cleanup;
pub mod commit;
#[cfg(feature = "engine")]
pub mod compaction;
pub mod config;
#[cfg(feature = "engine")]
pub mod engine;
pub mod fragment;
pub mod ids;
pub mod index;
pub mod lake;
pub mod log;
pub mod measure;
pub mod message;
#[cfg(feature = "engine")]
pub mod metrics;
#[cfg(feature = "signing")]
pub mod signing;
pub mod supabase;
#[cfg(feature = "synth")]
pub mod synth;
pub mod upload;
pub mod workflow;

#[cfg(test)]
mod testing;
