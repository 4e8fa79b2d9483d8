//! What the FUSOU client sends, as the service accepts it: the identifiers that reach storage
//! keys and queries ([`ids`]), and the fragment format ([`fragment`]): a Parquet segment per
//! table at declared offsets, each held by a bounded guard to what a Worker can afford to read.
//! The client is already on users' machines, so this crate changes only to accept more of
//! what it sends, never less. It does no I/O and links no Arrow: the upload Worker checks every
//! body with it.

pub mod fragment;
pub mod ids;

/// The client's tables and their columns (`port_tables.json`), as the lake governs them.
pub const PORT_TABLES_JSON: &str = include_str!("../data/port_tables.json");
