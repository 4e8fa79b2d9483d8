//! Table metadata (format v2), the JSON file a table's pointer names, as the spec's Appendix C
//! serialises it; and the two ways it changes here: a new snapshot, and snapshots expired.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::layout::{PartitionField, PartitionSpec};
use super::schema::{self, Schema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableMetadata {
    pub format_version: u8,
    pub table_uuid: String,
    pub location: String,
    pub last_sequence_number: i64,
    pub last_updated_ms: i64,
    pub last_column_id: i32,
    pub schemas: Vec<Schema>,
    pub current_schema_id: i32,
    pub partition_specs: Vec<PartitionSpec>,
    pub default_spec_id: i32,
    pub last_partition_id: i32,
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_snapshot_id: Option<i64>,
    pub refs: BTreeMap<String, SnapshotRef>,
    pub snapshots: Vec<Snapshot>,
    pub snapshot_log: Vec<LogEntry>,
    pub metadata_log: Vec<MetadataLogEntry>,
    pub sort_orders: Vec<SortOrder>,
    pub default_sort_order_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotRef {
    pub snapshot_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub snapshot_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub manifest_list: String,
    pub summary: BTreeMap<String, String>,
    pub schema_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogEntry {
    pub timestamp_ms: i64,
    pub snapshot_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetadataLogEntry {
    pub timestamp_ms: i64,
    pub metadata_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SortOrder {
    pub order_id: i32,
    pub fields: Vec<serde_json::Value>,
}

/// How long a table keeps its snapshots (time travel), in the manner of R2 Data Catalog's
/// snapshot expiration: a snapshot expires once it is older than `max_age_ms` **and** is not
/// among the newest `min_snapshots`; never by count alone, never the current one. (The group
/// commit bounds how many snapshots an age holds: one per table per commit interval.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age_ms: i64,
    pub min_snapshots: usize,
    /// Previous metadata files listed in `metadata-log`.
    pub max_metadata_log: usize,
    /// What an expired snapshot alone referenced is deleted this long after it expired, not
    /// before: a reader still planning from it finds its files.
    pub grace_ms: i64,
}

impl Retention {
    /// The time (ms) whose kept snapshots decide, at `now_ms`, what may be deleted: the grace
    /// period ago.
    pub fn graced(&self, now_ms: u64) -> i64 {
        now_ms as i64 - self.grace_ms
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: 7 * 24 * 3_600_000, min_snapshots: 100, max_metadata_log: 20, grace_ms: 3_600_000 }
    }
}

/// What expiring snapshots let go of: their manifest lists, and the metadata files that fell
/// off the log; all free to delete once the new metadata is the table's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub snapshots: Vec<Snapshot>,
    pub metadata_files: Vec<String>,
}

impl TableMetadata {
    /// A new table at `location`, without snapshots.
    pub fn new(table_uuid: String, location: String, now_ms: i64) -> Self {
        let (schema, spec) = (Schema::initial(), PartitionSpec::by_period_and_dataset());
        TableMetadata {
            format_version: 2,
            table_uuid,
            location,
            last_sequence_number: 0,
            last_updated_ms: now_ms,
            last_column_id: schema.last_column_id(),
            current_schema_id: schema.schema_id,
            properties: schema::properties(&schema),
            schemas: vec![schema],
            default_spec_id: spec.spec_id,
            last_partition_id: spec.fields.iter().map(|f| f.field_id).max().unwrap_or(999),
            partition_specs: vec![spec],
            current_snapshot_id: None,
            refs: BTreeMap::new(),
            snapshots: Vec::new(),
            snapshot_log: Vec::new(),
            metadata_log: Vec::new(),
            sort_orders: vec![SortOrder { order_id: 0, fields: Vec::new() }],
            default_sort_order_id: 0,
        }
    }

    /// The partition spec new files are written with.
    pub fn default_spec(&self) -> &PartitionSpec {
        self.spec(self.default_spec_id).expect("the default spec is among the table's specs")
    }

    /// The partition spec of id `spec_id`, as the table's manifests name it.
    pub fn spec(&self, spec_id: i32) -> Option<&PartitionSpec> {
        self.partition_specs.iter().find(|s| s.spec_id == spec_id)
    }

    /// The table's spec equal to `spec` (but for its id), added under `spec`'s id if it has none.
    pub fn ensure_spec(&mut self, spec: PartitionSpec) -> &PartitionSpec {
        let at = match self.partition_specs.iter().position(|s| s.fields == spec.fields) {
            Some(at) => at,
            None => {
                self.last_partition_id = self.last_partition_id.max(spec.fields.iter().map(|f| f.field_id).max().unwrap_or(0));
                self.partition_specs.push(spec);
                self.partition_specs.len() - 1
            }
        };
        &self.partition_specs[at]
    }

    pub fn current_schema(&self) -> &Schema {
        self.schemas.iter().find(|s| s.schema_id == self.current_schema_id).expect("the current schema is listed")
    }

    pub fn current_snapshot(&self) -> Option<&Snapshot> {
        let id = self.current_snapshot_id?;
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    /// Makes `schema` the current one (a new version from [`schema::admit`]).
    pub fn add_schema(&mut self, schema: Schema) {
        self.last_column_id = self.last_column_id.max(schema.last_column_id());
        self.current_schema_id = schema.schema_id;
        self.properties = schema::properties(&schema);
        self.schemas.push(schema);
    }

    /// Makes `snapshot` the current one, on the `main` branch.
    pub fn add_snapshot(&mut self, snapshot: Snapshot) {
        self.last_sequence_number = snapshot.sequence_number;
        self.last_updated_ms = snapshot.timestamp_ms;
        self.current_snapshot_id = Some(snapshot.snapshot_id);
        self.refs.insert("main".into(), SnapshotRef { snapshot_id: snapshot.snapshot_id, kind: "branch".into() });
        self.snapshot_log.push(LogEntry { timestamp_ms: snapshot.timestamp_ms, snapshot_id: snapshot.snapshot_id });
        self.snapshots.push(snapshot);
    }

    /// Records `previous` (this metadata's predecessor) in the metadata log.
    pub fn log_previous(&mut self, previous: &str, previous_updated_ms: i64) {
        self.metadata_log.push(MetadataLogEntry { timestamp_ms: previous_updated_ms, metadata_file: previous.to_owned() });
    }

    /// Expires snapshots older than the retention's age (as of `now_ms`) and beyond its floor,
    /// never the current one; drops the schemas no kept snapshot uses (but the current one)
    /// and trims the metadata log.
    pub fn expire(&mut self, retention: &Retention, now_ms: i64) -> Expired {
        let current = self.current_snapshot_id;
        let floor = self.snapshots.len().saturating_sub(retention.min_snapshots);
        let cutoff = now_ms - retention.max_age_ms;
        let (mut kept, mut expired) = (Vec::new(), Vec::new());
        for (i, s) in std::mem::take(&mut self.snapshots).into_iter().enumerate() {
            if Some(s.snapshot_id) == current || i >= floor || s.timestamp_ms > cutoff {
                kept.push(s);
            } else {
                expired.push(s);
            }
        }
        self.snapshots = kept;
        let live: std::collections::HashSet<i64> = self.snapshots.iter().map(|s| s.snapshot_id).collect();
        self.snapshot_log.retain(|e| live.contains(&e.snapshot_id));
        let used: std::collections::HashSet<i32> = self.snapshots.iter().map(|s| s.schema_id).chain([self.current_schema_id]).collect();
        self.schemas.retain(|s| used.contains(&s.schema_id));
        let drop = self.metadata_log.len().saturating_sub(retention.max_metadata_log);
        let metadata_files = self.metadata_log.drain(..drop).map(|e| e.metadata_file).collect();
        Expired { snapshots: expired, metadata_files }
    }

    /// The lowest sequence number of a kept snapshot: a file deleted from the table at
    /// sequence number `n` is referenced by no kept snapshot once this is at least `n`.
    pub fn oldest_sequence_number(&self) -> i64 {
        self.snapshots.iter().map(|s| s.sequence_number).min().unwrap_or(self.last_sequence_number)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata serializes")
    }
}
