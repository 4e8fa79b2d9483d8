//! The bindings this Worker uses, named as in `wrangler.toml`. A missing binding is an error
//! answered as a misconfiguration, never a panic.

pub const BATTLE_DATA_BUCKET: &str = "BATTLE_DATA_BUCKET";
pub const BATTLE_INDEX_DB: &str = "BATTLE_INDEX_DB";
pub const COMPACTION_QUEUE: &str = "COMPACTION_QUEUE";
pub const COMPACTION_SERVICE: &str = "COMPACTION_SERVICE";
