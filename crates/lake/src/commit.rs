//! One table commit, planned as values: from the table's current metadata, its current
//! manifests and what D1 says is pending (files to add, files to remove), the new snapshot's
//! manifests, manifest list and metadata file, and the index updates that go with them.
//! Pure: the driver ([`super::commit_table`]) reads, writes and swaps.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::contract::Contract;
use super::manifest::{self, DataFile, Entry, ManifestFile, Status};
use super::metadata::{Expired, PartitionSpec, Retention, Snapshot, TableMetadata};
use super::rollup::{self, RollupChanges};
use super::schema::{self, Column, DATASET_COLUMN, PERIOD_COLUMN};
use super::statistics::Statistics;
use fusou_core::index::LakePending;

/// What the index says the table must change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    /// Live files the table does not list yet (their columns as the compaction recorded them).
    pub adds: Vec<LakePending>,
    /// Retired files the table still lists (on their own, or through a roll-up).
    pub removes: Vec<LakePending>,
    /// What roll-ups change with them.
    pub rollups: RollupChanges,
}

impl Pending {
    /// The pending rows of whole runs, as [`fusou_core::index::LAKE_PENDING`] answers them.
    pub fn of(rows: Vec<LakePending>) -> Self {
        let (adds, removes) = rows.into_iter().partition(|r| r.add);
        Pending { adds, removes, rollups: RollupChanges::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty() && self.rollups.is_empty()
    }

    /// The runs whose files these are.
    pub fn runs(&self) -> usize {
        self.adds.iter().chain(&self.removes).map(|r| r.run.as_str()).collect::<HashSet<_>>().len()
    }

    /// The partitions (period, and dataset when known) of every file this commit removes from
    /// the table's manifests: retired files, the files a new roll-up replaces, and the files of
    /// the roll-ups that leave.
    fn removal_partitions(&self) -> Vec<(&str, Option<&str>)> {
        let mut partitions: Vec<(&str, Option<&str>)> =
            self.removes.iter().map(|r| (r.period_tag.as_str(), Some(r.dataset_id.as_str()))).collect();
        if let Some(arriving) = &self.rollups.arriving {
            partitions.extend(arriving.replaces.iter().map(|r| (r.period_tag.as_str(), Some(r.dataset_id.as_str()))));
        }
        partitions.extend(self.rollups.leaving.iter().map(|l| (l.period.as_str(), None)));
        partitions
    }

    /// Whether the table has pending files this commit does not take.
    pub fn more(&self) -> bool {
        let taken = (self.adds.len() + self.removes.len()) as u64;
        self.adds.iter().chain(&self.removes).any(|r| r.backlog > taken)
    }
}

/// How tables are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeConfig {
    /// Where keys of the bucket are found by readers: `s3://<bucket>` in production (R2's S3
    /// API), a directory that mirrors the bucket on a local machine (`file:///…`).
    pub root: String,
    pub retention: Retention,
    /// A commit takes whole runs, oldest first, while it has taken fewer files than this (so
    /// at least one run, however large); the rest wait for the next.
    pub files_per_commit: usize,
    /// A table gets at most one snapshot this often (`LAKE_COMMIT_INTERVAL_SECONDS`), which
    /// takes everything pending for it (up to `files_per_commit`).
    pub commit_interval_ms: i64,
    /// When a snapshot would list more manifests than this, its manifests smaller than
    /// `manifest_target_bytes` are merged into one (as Iceberg writers' `commit.manifest-merge`).
    pub manifests_before_merge: usize,
    pub manifest_target_bytes: i64,
    /// Compare-and-swap attempts of one table commit before it gives up (what it leaves
    /// pending, the committer's next pass takes).
    pub attempts: u32,
    /// Subrequests one pass of the committer may make, and the clean-up's upkeep of the
    /// tables: an invocation has 10,000.
    pub subrequests_per_pass: u64,
    pub subrequests_per_cleanup: u64,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            root: crate::rest::DEFAULT_ROOT.into(),
            retention: Retention::default(),
            files_per_commit: 1000,
            commit_interval_ms: 60_000,
            manifests_before_merge: 16,
            manifest_target_bytes: 8 << 20,
            attempts: 8,
            subrequests_per_pass: 5000,
            subrequests_per_cleanup: 3000,
        }
    }
}

impl LakeConfig {
    /// The defaults, then `LAKE_LOCATION` (where readers find the bucket's keys), the
    /// retention of snapshots for time travel (`LAKE_SNAPSHOT_DAYS`, `LAKE_MIN_SNAPSHOTS`,
    /// `LAKE_GRACE_MINUTES`) and `LAKE_COMMIT_INTERVAL_SECONDS`.
    pub fn from_vars(vars: &fusou_core::config::Vars<'_>) -> Result<Self, fusou_core::config::ConfigError> {
        let d = Self::default();
        let root = crate::rest::lake_root(vars)?;
        let ms = |name: &'static str, unit: i64| vars.number(name).map(|n| (n as i64).saturating_mul(unit));
        let retention = Retention {
            max_age_ms: ms("LAKE_SNAPSHOT_DAYS", 86_400_000)?,
            min_snapshots: vars.positive("LAKE_MIN_SNAPSHOTS")? as usize,
            grace_ms: ms("LAKE_GRACE_MINUTES", 60_000)?,
            ..d.retention
        };
        let commit_interval_ms = ms("LAKE_COMMIT_INTERVAL_SECONDS", 1000)?;
        Ok(LakeConfig { root, retention, commit_interval_ms, ..d })
    }

    /// The location of bucket key `key`.
    pub fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.root.trim_end_matches('/'))
    }

    /// The bucket key of `location`, when it is one of this lake's.
    pub fn key<'a>(&self, location: &'a str) -> Option<&'a str> {
        location.strip_prefix(self.root.trim_end_matches('/')).and_then(|k| k.strip_prefix('/'))
    }
}

/// The bucket key under which table `table`'s metadata lives.
pub fn table_prefix(table: &str) -> String {
    format!("lake/fusou/{table}")
}

/// The table as its pointer names it.
#[derive(Debug, Clone)]
pub struct Current {
    pub metadata: TableMetadata,
    pub key: String,
    pub version: i64,
}

/// One commit attempt: its ids (random: a retried attempt never reuses an object name) and
/// its time.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for a commit's first attempt, 2 after it lost one race, …
    pub number: u32,
    pub snapshot_id: i64,
    pub uuid: uuid::Uuid,
    pub now_ms: i64,
}

impl Attempt {
    /// Attempt `number` of a commit, at `now_ms`.
    pub fn new(number: u32, now_ms: i64) -> Self {
        let uuid = uuid::Uuid::new_v4();
        // A positive 63-bit id, as Iceberg writers draw them.
        Attempt { number, snapshot_id: (uuid.as_u128() >> 65) as i64, uuid, now_ms }
    }
}

/// The manifests of the current snapshot a commit must read: those holding a file it removes
/// (by their partition bounds), and the small ones it merges.
pub fn manifests_to_read<'a>(
    listed: &'a [ManifestFile],
    specs: &[PartitionSpec],
    pending: &Pending,
    config: &LakeConfig,
) -> Vec<&'a ManifestFile> {
    let merging = listed.len() + 1 > config.manifests_before_merge;
    // Each manifest is pruned by its own spec's fields (a field its spec lacks prunes nothing).
    let within = |m: &ManifestFile, (period, dataset): &(&str, Option<&str>)| {
        let spec = specs.iter().find(|s| s.spec_id == m.partition_spec_id);
        let may_hold = |column: &str, value: Option<&str>| {
            let summary = spec.and_then(|s| s.position(column)).and_then(|i| m.partitions.get(i));
            summary.zip(value).is_none_or(|(s, v)| s.may_hold(v))
        };
        may_hold(PERIOD_COLUMN, Some(period)) && may_hold(DATASET_COLUMN, *dataset)
    };
    let removing = pending.removal_partitions();
    listed
        .iter()
        .filter(|m| m.live_files() > 0 || merging)
        .filter(|m| (merging && m.length < config.manifest_target_bytes) || removing.iter().any(|r| within(m, r)))
        .collect()
}

/// A planned commit: the objects to write, the new metadata, and what the index records.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub metadata: TableMetadata,
    pub metadata_key: String,
    pub version: i64,
    /// New objects (manifests, the manifest list, the metadata file), keyed.
    pub objects: Vec<(String, Vec<u8>)>,
    /// The new snapshot, unless the commit only records refusals.
    pub snapshot: Option<Snapshot>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub refused: Vec<(String, String)>,
    /// Added files some of whose columns the table leaves out, and why.
    pub noted: Vec<(String, String)>,
    /// Objects no snapshot will need once every kept snapshot's sequence number is at least
    /// the number given (0: at once).
    pub garbage: Vec<(String, i64)>,
    /// Roll-ups: the one listed, those removed (and of them, those taken apart), those refused.
    pub rollup_added: Option<String>,
    pub rollups_removed: Vec<String>,
    pub rollups_taken_apart: Vec<String>,
    pub rollups_refused: Vec<(String, String)>,
}

impl Prepared {
    /// A commit that only records refusals: no object, no snapshot, the pointer unchanged.
    fn nothing(current: Option<&Current>, metadata: &TableMetadata, refused: Vec<(String, String)>) -> Self {
        Prepared {
            metadata: metadata.clone(),
            metadata_key: current.map(|c| c.key.clone()).unwrap_or_default(),
            version: current.map_or(0, |c| c.version),
            objects: Vec::new(),
            snapshot: None,
            added: Vec::new(),
            removed: Vec::new(),
            refused,
            noted: Vec::new(),
            garbage: Vec::new(),
            rollup_added: None,
            rollups_removed: Vec::new(),
            rollups_taken_apart: Vec::new(),
            rollups_refused: Vec::new(),
        }
    }

    /// With the roll-ups `changes` refuses: recorded, and their files garbage at once.
    fn refusing(mut self, changes: &RollupChanges) -> Self {
        for (id, why, files) in &changes.refused {
            self.rollups_refused.push((id.clone(), why.clone()));
            self.garbage.extend(files.iter().map(|f| (f.key.clone(), 0)));
        }
        self
    }
}

/// Plans the commit of `pending` on `current` (None: the table's first commit). `manifests` are
/// the entries of the manifests [`manifests_to_read`] chose, by path.
pub fn prepare(
    table: &str,
    current: Option<&Current>,
    listed: &[ManifestFile],
    manifests: &HashMap<String, Vec<Entry>>,
    pending: &Pending,
    config: &LakeConfig,
    attempt: Attempt,
) -> Result<Prepared, String> {
    let now_ms = attempt.now_ms;
    let prefix = table_prefix(table);
    let mut metadata = match current {
        Some(c) => c.metadata.clone(),
        None => TableMetadata::new(attempt.uuid.to_string(), config.location(&prefix), now_ms),
    };
    let sequence_number = metadata.last_sequence_number + 1;
    let snapshot_id = attempt.snapshot_id;
    let version = current.map_or(1, |c| c.version + 1);

    // The table is the contract's, or none: files of a table outside it are refused, and no
    // table is made for them.
    let (mut accepted, mut refused, mut noted) = (Vec::new(), Vec::new(), Vec::new());
    let Some(contract) = Contract::client().table(table) else {
        let reason = format!("table {table} is outside the client's contract; its files stay in their datasets");
        refused.extend(pending.adds.iter().map(|a| (a.key.clone(), reason.clone())));
        return Ok(Prepared::nothing(current, &metadata, refused).refusing(&pending.rollups));
    };
    // The schema holds the contract's columns (a changed contract evolves it here), and every
    // added file's columns are admitted to it, or the file is refused.
    if let Some(conformed) = schema::conform(metadata.current_schema(), metadata.last_column_id, contract)? {
        metadata.add_schema(conformed);
    }
    for add in &pending.adds {
        let columns: Result<Vec<Column>, String> = match &add.columns {
            Some(json) => serde_json::from_str(json).map_err(|e| format!("its recorded columns do not decode: {e}")),
            None => Err("no columns were recorded for it".into()),
        };
        let admitted = columns.and_then(|c| Ok((schema::admit(metadata.current_schema(), &c, contract)?, c)));
        match admitted {
            Ok((admission, columns)) => {
                if let Some(note) = admission.note() {
                    noted.push((add.key.clone(), note));
                }
                if let Some(s) = admission.schema {
                    metadata.add_schema(s);
                }
                accepted.push((add, columns));
            }
            Err(reason) => refused.push((add.key.clone(), reason)),
        }
    }
    let removed: Vec<String> = pending.removes.iter().map(|r| r.key.clone()).collect();
    let rollups = &pending.rollups;
    if accepted.is_empty() && removed.is_empty() && rollups.leaving.is_empty() && rollups.arriving.is_none() {
        return Ok(Prepared::nothing(current, &metadata, refused).refusing(rollups));
    }

    let (mut objects, mut garbage, mut list) = (Vec::new(), Vec::new(), Vec::new());
    let manifest_key = |n: usize| format!("{prefix}/metadata/{}-m{n}.avro", attempt.uuid);
    let write = |entries: &[Entry], spec: &PartitionSpec, objects: &mut Vec<(String, Vec<u8>)>, schema: &schema::Schema| {
        let key = manifest_key(objects.len());
        let bytes = manifest::write_manifest(entries, schema, spec)?;
        let described = manifest::describe(config.location(&key), bytes.len() as i64, entries, spec, snapshot_id, sequence_number);
        objects.push((key, bytes));
        Ok::<_, String>(described)
    };
    let rollup_spec = rollups.arriving.as_ref().map(|_| metadata.ensure_spec(rollup::spec()).clone());
    let (schema, spec) = (metadata.current_schema().clone(), metadata.default_spec().clone());
    let entry = |key: &str, spec: &PartitionSpec, period: &str, dataset: &str, rows: i64, size: i64, columns: &[Column]| Entry {
        status: Status::Added,
        snapshot_id,
        sequence_number,
        file_sequence_number: sequence_number,
        file: DataFile {
            path: config.location(key),
            partition: spec.partition(|column| match column {
                PERIOD_COLUMN => Some(period.to_owned()),
                DATASET_COLUMN => Some(dataset.to_owned()),
                _ => None,
            }),
            record_count: rows,
            file_size_in_bytes: size,
            statistics: Statistics::of_columns(columns, &schema),
            unmodeled: Vec::new(),
        },
    };

    // The new files, in one manifest of their own, with the files a roll-up taken apart
    // covered, listed on their own again.
    let mut added_entries: Vec<Entry> =
        accepted.iter().map(|(a, columns)| entry(&a.key, &spec, &a.period_tag, &a.dataset_id, a.row_count, a.size, columns)).collect();
    for c in &rollups.uncovered {
        let columns: Vec<Column> = match &c.columns {
            Some(json) => serde_json::from_str(json).map_err(|e| format!("{}: its recorded columns do not decode: {e}", c.key))?,
            None => Vec::new(),
        };
        added_entries.push(entry(&c.key, &spec, &c.period_tag, &c.dataset_id, c.row_count, c.size, &columns));
    }
    // A new roll-up's files, in a manifest of the period-only spec.
    let rollup_entries: Vec<Entry> = match (&rollups.arriving, &rollup_spec) {
        (Some(a), Some(rs)) => a.files.iter().map(|f| entry(&f.key, rs, &a.period, "", f.rows, f.size, &f.columns)).collect(),
        _ => Vec::new(),
    };

    // Manifests that were read: rewritten without the removed files (marked deleted), merged
    // with the new files' entries when small; the others carried over as they are.
    let mut removing: HashSet<String> = pending.removes.iter().map(|r| config.location(&r.key)).collect();
    if let Some(a) = &rollups.arriving {
        removing.extend(a.replaces.iter().map(|r| config.location(&r.key)));
    }
    removing.extend(rollups.leaving.iter().flat_map(|l| l.files.iter().map(|f| config.location(&f.key))));
    let mut deleted_files = 0i64;
    let merging = listed.len() + 1 > config.manifests_before_merge;
    let (mut merged, mut deleted_rows, mut deleted_bytes) = (Vec::<Entry>::new(), 0i64, 0i64);
    for m in listed {
        let Some(entries) = manifests.get(&m.path) else {
            list.push(m.clone());
            continue;
        };
        let touched = entries.iter().any(|e| e.status != Status::Deleted && removing.contains(&e.file.path));
        // A small manifest that is rewritten anyway joins the merged one: a commit writes one
        // manifest however many small ones its removals touch.
        // (Manifests of one spec only: an older spec's are rewritten on their own.)
        let merge = (merging || touched) && m.length < config.manifest_target_bytes && m.partition_spec_id == spec.spec_id;
        if !touched && !merge {
            list.push(m.clone());
            continue;
        }
        let mut rewritten = Vec::with_capacity(entries.len());
        for e in entries.iter().filter(|e| e.status != Status::Deleted) {
            let mut e = e.clone();
            if removing.contains(&e.file.path) {
                deleted_files += 1;
                deleted_rows += e.file.record_count;
                deleted_bytes += e.file.file_size_in_bytes;
                (e.status, e.snapshot_id) = (Status::Deleted, snapshot_id);
            } else {
                e.status = Status::Existing;
            }
            rewritten.push(e);
        }
        if let Some(key) = config.key(&m.path) {
            garbage.push((key.to_owned(), sequence_number));
        }
        match merge {
            true => merged.extend(rewritten),
            // Kept while it records this commit's deletions; a later rewrite drops it when empty.
            false if !rewritten.is_empty() => {
                let own =
                    metadata.spec(m.partition_spec_id).ok_or_else(|| format!("{}: no partition spec {}", m.path, m.partition_spec_id))?;
                list.push(write(&rewritten, own, &mut objects, &schema)?)
            }
            false => {}
        }
    }
    merged.extend(added_entries.iter().cloned());
    if !merged.is_empty() {
        list.insert(0, write(&merged, &spec, &mut objects, &schema)?);
    }
    if let Some(rs) = rollup_spec.as_ref().filter(|_| !rollup_entries.is_empty()) {
        list.insert(0, write(&rollup_entries, rs, &mut objects, &schema)?);
    }

    let parent = metadata.current_snapshot_id;
    let list_key = format!("{prefix}/metadata/snap-{snapshot_id}-1-{}.avro", attempt.uuid);
    objects.push((list_key.clone(), manifest::write_manifest_list(&list, snapshot_id, parent, sequence_number)?));

    let all_added = || added_entries.iter().chain(&rollup_entries).map(|e| &e.file);
    let added_files = all_added().count() as i64;
    let added_rows: i64 = all_added().map(|f| f.record_count).sum();
    let added_bytes: i64 = all_added().map(|f| f.file_size_in_bytes).sum();
    let operation = match (added_files == 0, deleted_files == 0) {
        (_, true) => "append",
        (false, false) if added_rows == deleted_rows => "replace",
        (true, false) => "delete",
        (false, false) => "overwrite",
    };
    let previous = metadata.current_snapshot().map(|s| s.summary.clone()).unwrap_or_default();
    let total = |name: &str, delta: i64| {
        let before: i64 = previous.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        (before + delta).to_string()
    };
    let mut summary = BTreeMap::from([
        ("operation".to_owned(), operation.to_owned()),
        ("added-data-files".to_owned(), added_files.to_string()),
        ("deleted-data-files".to_owned(), deleted_files.to_string()),
        ("added-records".to_owned(), added_rows.to_string()),
        ("deleted-records".to_owned(), deleted_rows.to_string()),
        ("added-files-size".to_owned(), added_bytes.to_string()),
        ("removed-files-size".to_owned(), deleted_bytes.to_string()),
        ("total-data-files".to_owned(), total("total-data-files", added_files - deleted_files)),
        ("total-records".to_owned(), total("total-records", added_rows - deleted_rows)),
        ("total-files-size".to_owned(), total("total-files-size", added_bytes - deleted_bytes)),
        ("total-delete-files".to_owned(), "0".to_owned()),
        ("total-position-deletes".to_owned(), "0".to_owned()),
        ("total-equality-deletes".to_owned(), "0".to_owned()),
    ]);
    summary.insert("fusou.runs".to_owned(), pending.runs().to_string());
    // Which compare-and-swap attempt of its commit this snapshot was (1: no other writer).
    summary.insert("fusou.attempt".to_owned(), attempt.number.to_string());
    let snapshot = Snapshot {
        snapshot_id,
        parent_snapshot_id: parent,
        sequence_number,
        timestamp_ms: now_ms.max(metadata.last_updated_ms),
        manifest_list: config.location(&list_key),
        summary,
        schema_id: metadata.current_schema_id,
    };
    metadata.add_snapshot(snapshot.clone());
    if let Some(c) = current {
        metadata.log_previous(&config.location(&c.key), c.metadata.last_updated_ms);
    }
    let expired = metadata.expire(&config.retention, now_ms);
    garbage.extend(expired_garbage(&expired, config, metadata.oldest_sequence_number()));

    let metadata_key = format!("{prefix}/metadata/{version:05}-{}.metadata.json", attempt.uuid);
    objects.push((metadata_key.clone(), metadata.to_json().into_bytes()));
    // The files of the roll-ups that leave: free once no kept snapshot lists them.
    garbage.extend(rollups.leaving.iter().flat_map(|l| l.files.iter().map(|f| (f.key.clone(), sequence_number))));
    let prepared = Prepared {
        metadata,
        metadata_key,
        version,
        objects,
        snapshot: Some(snapshot),
        added: accepted.iter().map(|(a, _)| a.key.clone()).collect(),
        removed,
        refused,
        noted,
        garbage,
        rollup_added: rollups.arriving.as_ref().map(|a| a.id.clone()),
        rollups_removed: rollups.leaving.iter().map(|l| l.id.clone()).collect(),
        rollups_taken_apart: rollups.leaving.iter().filter(|l| l.taken_apart).map(|l| l.id.clone()).collect(),
        rollups_refused: Vec::new(),
    };
    Ok(prepared.refusing(rollups))
}

/// What expired snapshots leave to delete once the table keeps no snapshot below `oldest` (a
/// grace period after this expiry): their manifest lists and the metadata files off the log.
/// (Their manifests are garbage from the commit that replaced them.)
pub fn expired_garbage(expired: &Expired, config: &LakeConfig, oldest: i64) -> Vec<(String, i64)> {
    let lists = expired.snapshots.iter().map(|s| s.manifest_list.as_str());
    let metadata_files = expired.metadata_files.iter().map(String::as_str);
    lists.chain(metadata_files).filter_map(|l| config.key(l)).map(|k| (k.to_owned(), oldest)).collect()
}
