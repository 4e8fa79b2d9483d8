//! The FUSOU pipeline core: what both Workers share, as plain Rust.
//!
//! It owns the upload's contract with the deployed client and its checks ([`upload`]), the
//! index's SQL ([`index`]), the one queue message ([`message`]), the durable step runner
//! ([`workflow`]), the Supabase calls as data ([`supabase`]), the settings both Workers read
//! ([`config`]), the log-line convention ([`log`]) and figures of the work ([`measure`]). It
//! knows nothing of workers-rs, does no I/O (time, keys and bytes are passed in, storage
//! through `fusou-ports`), and links no Parquet writer: the upload Worker depends on it alone.
//!
//! - [`upload`]: the two-phase upload: the handshake, storage keys, the signed upload grant.
//! - [`index`]: the SQL the Workers run on D1, as named statements.
//! - [`message`]: [`message::CompactionMessage`], the one queue message every producer sends.
//! - [`workflow`]: a durable step runner (`step(name, config, fn)`), storage and time as ports.
//! - [`supabase`]: the PostgREST calls the Workers make, as data.
//! - [`config`]: deployment settings from Worker variables.
//! - [`log`]: the one structured log-line convention of both Workers.
//! - [`measure`]: figures of the work itself: a counting allocator (peak heap), the Wasm
//!   memory's size, a future's own execution time (`Busy`).

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

pub mod config;
pub mod index;
pub mod log;
pub mod measure;
pub mod message;
pub mod supabase;
pub mod upload;
pub mod workflow;
