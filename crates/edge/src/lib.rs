//! What both FUSOU Workers share on top of workers-rs: the binding names, one way to log, one
//! Supabase REST client, and D1 parameter helpers. Decisions stay in `fusou-core`; this crate
//! only performs I/O.

pub mod d1;
pub mod log;
pub mod supabase;

/// Binding names, as in both wrangler configs.
pub mod bindings {
    pub const BATTLE_DATA_BUCKET: &str = "BATTLE_DATA_BUCKET";
    pub const BATTLE_INDEX_DB: &str = "BATTLE_INDEX_DB";
    pub const COMPACTION_QUEUE: &str = "COMPACTION_QUEUE";
    pub const COMPACTION_SERVICE: &str = "COMPACTION_SERVICE";
}

/// Milliseconds since the Unix epoch, from the Worker's clock.
pub fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

/// The current time, from the Worker's clock.
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms() as i64).expect("the clock is in range")
}
