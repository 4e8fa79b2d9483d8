//! Open tables: each battle table is an Apache Iceberg (format v2) table, `fusou.<table>`, over
//! the live compacted files of every dataset, partitioned by period and dataset.
//!
//! This crate owns the tables' metadata (schemas, snapshots, manifests), their commits and
//! upkeep, and the REST catalog's answers. It never writes or reads a data file's rows (the
//! engine writes them), never decides which files exist (the index does), and reaches D1 and
//! R2 only through the ports.
//!
//! **The index is the source of truth; a table is brought to agree with it.** A compacted file
//! is in its table exactly when the index marks it (`lake_snapshot`), and leaves it when its
//! retirement is marked (`lake_removed_seq`). Runs only record files; the tables' one committer
//! ([`commit_pending`], a Durable Object's alarm in the Worker) gives each table behind the
//! index at most one snapshot per commit interval. A table commit ([`commit_table`]):
//! 1. reads the table's pointer (`lake_tables`), then in one query what the index holds that the
//!    table does not, in whole runs: each run's live files to add and the files it retired;
//! 2. plans the new snapshot ([`commit::prepare`]) on the metadata the pointer names, and writes
//!    its new objects under fresh names (nothing existing is overwritten);
//! 3. swaps the pointer in one D1 batch with the marks: the swap succeeds only if the pointer
//!    still names what step 1 read, and each mark is fenced by the pointer naming the new
//!    metadata. So marks and snapshot go together or not at all; a commit that lost the race
//!    retries from step 1.
//!
//! So a crash anywhere leaves the files pending for the next pass, and no file is listed twice:
//! its add and its removal are each marked once, atomically with the snapshot. Whole runs make
//! each snapshot the index as step 1 read it: a consolidation's output and inputs change
//! places in one snapshot, so no reader sees a row missing or twice.
//!
//! Snapshots expire by age above a floor ([`metadata::Retention`]); objects no kept snapshot
//! needs are recorded in `lake_garbage` with the sequence number from which they are free, and
//! deleted by the clean-up ([`maintain`]) a grace period after the table stopped keeping any
//! snapshot below it (`lake_expiries`).

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

pub mod commit;
pub mod contract;
pub mod layout;
pub mod manifest;
pub mod metadata;
pub mod rest;
pub mod rollup;
pub mod schema;
pub mod statistics;

pub use tables::*;

mod tables {
    use std::cell::Cell;
    use std::collections::HashMap;

    use bytes::Bytes;
    use futures_util::{StreamExt, TryStreamExt};
    use serde::{Deserialize, Serialize};

    use super::commit::{self, Attempt, Current, LakeConfig, Pending, Prepared};
    use super::manifest::{self, Entry, ManifestFile};
    use super::metadata::{PartitionSpec, TableMetadata};
    use super::rollup;
    use fusou_core::index::{self, KeyRow, LakeTable, SqlValue, Statement, iso, keyed, text};
    use fusou_ports::Clock;
    use fusou_ports::{Blobs, PortError, PortResult, Sql};

    /// Objects one commit reads or writes at once.
    const CONCURRENT_OBJECTS: usize = 8;

    /// What one table commit did.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TableCommit {
        pub table: String,
        /// The snapshot it added, if the table changed.
        pub snapshot_id: Option<i64>,
        pub added: u64,
        pub removed: u64,
        pub refused: u64,
        /// Compare-and-swap attempts (more than one: another writer committed first).
        pub attempts: u32,
        /// The index still holds more for the table (the commit took its share).
        pub more: bool,
    }

    /// The subrequests of one commit attempt before the manifests it reads: the pointer and
    /// pending queries, the metadata file and the manifest list.
    const ATTEMPT_READS: u64 = 4;
    /// And after them: its writes (the merged manifest and at most one large rewritten one, the
    /// list, the metadata file), the swap, a clean-up of a lost attempt's objects.
    const ATTEMPT_WRITES: u64 = 6;
    /// The subrequests of one commit attempt besides the manifests it reads.
    pub const ATTEMPT_SUBREQUESTS: u64 = ATTEMPT_READS + ATTEMPT_WRITES;

    /// Brings table `table` to agree with the index: one snapshot of whole runs (up to the
    /// configured number of files), by compare-and-swap, retried against other writers. An
    /// attempt begins only if its worst case fits in `budget` subrequests, so that an
    /// invocation stays within the platform's limit (what is left stays pending).
    pub async fn commit_table<S: Sql, B: Blobs, C: Clock>(
        sql: &S,
        blobs: &B,
        clock: &C,
        table: &str,
        config: &LakeConfig,
        budget: &Cell<u64>,
    ) -> PortResult<TableCommit> {
        let mut outcome = TableCommit { table: table.to_owned(), ..TableCommit::default() };
        let spent = || Err(format!("table {table}: the subrequests for table commits are spent; what is left stays pending").into());
        let spend = |n: usize| budget.set(budget.get().saturating_sub(n as u64));
        while outcome.attempts < config.attempts {
            if budget.get() < ATTEMPT_SUBREQUESTS {
                return spent();
            }
            outcome.attempts += 1;
            spend(2);
            let pointer: Option<LakeTable> = sql.query(index::LAKE_TABLE, &[text(table)]).await?.pop();
            let rows = sql.query(index::LAKE_PENDING, &[text(table), SqlValue::from(config.files_per_commit as u64)]).await?;
            let mut pending = Pending::of(rows);
            pending.rollups = rollup_changes(sql, table, &pending, budget).await?;
            if pending.is_empty() {
                return Ok(outcome);
            }
            let current = match &pointer {
                Some(p) => Some(load(blobs, p).await?),
                None => None,
            };
            let listed = match current.as_ref().and_then(|c| c.metadata.current_snapshot()) {
                Some(s) => manifest::read_manifest_list(&get(blobs, config, &s.manifest_list).await?)?,
                None => Vec::new(),
            };
            let specs = current.as_ref().map_or(&[][..], |c| &c.metadata.partition_specs);
            let to_read = commit::manifests_to_read(&listed, specs, &pending, config);
            spend(pointer.is_some() as usize * 2);
            if budget.get() < to_read.len() as u64 + ATTEMPT_WRITES {
                return spent();
            }
            spend(to_read.len());
            let manifests = read_manifests(blobs, config, specs, &to_read).await?;
            let now = clock.now_ms() as i64;
            let prepared =
                commit::prepare(table, current.as_ref(), &listed, &manifests, &pending, config, Attempt::new(outcome.attempts, now))?;
            spend(prepared.objects.len() + 2);
            put_all(blobs, &prepared.objects).await?;
            let statements = swap(table, current.as_ref(), &prepared, now);
            let changes = match sql.batch(&statements).await {
                Ok(changes) => changes,
                Err(e) => {
                    // The swap may have happened: the objects stay (garbage at worst).
                    return Err(format!("table {table}: the swap: {e}").into());
                }
            };
            outcome.refused += prepared.refused.len() as u64;
            if prepared.snapshot.is_none() {
                // Refusals only: recorded (or fenced off by a commit meanwhile); look again.
                continue;
            }
            if changes.first() == Some(&1) {
                outcome.snapshot_id = prepared.snapshot.as_ref().map(|s| s.snapshot_id);
                outcome.added = prepared.added.len() as u64;
                outcome.removed = prepared.removed.len() as u64;
                outcome.more = pending.more();
                return Ok(outcome);
            }
            // Another writer swapped first: this attempt's objects are nobody's.
            let keys: Vec<String> = prepared.objects.iter().map(|(k, _)| k.clone()).collect();
            let _ = blobs.delete(&keys).await;
            clock.sleep(backoff_ms(outcome.attempts)).await;
        }
        Err(format!("table {table}: {} commit attempts lost the race to other writers", config.attempts).into())
    }

    /// Pending roll-ups a commit checks at most (the first valid one is listed).
    const ROLLUPS_PER_COMMIT: i64 = 8;

    /// What roll-ups change in the commit of `pending` (see [`rollup`]): the roll-ups covering a
    /// file it removes are taken apart, and the oldest roll-up waiting is listed if what it
    /// read is unchanged (those before it that changed are refused).
    async fn rollup_changes<S: Sql>(sql: &S, table: &str, pending: &Pending, budget: &Cell<u64>) -> PortResult<rollup::RollupChanges> {
        use super::rollup::{Arriving, Leaving, files_of};
        let spend = |n: u64| budget.set(budget.get().saturating_sub(n));
        let mut changes = rollup::RollupChanges::default();
        let leaving = async |id: &str, taken_apart: bool| -> PortResult<Leaving> {
            let row: index::LakeRollup =
                sql.query(index::LAKE_ROLLUP, &[text(id)]).await?.pop().ok_or_else(|| format!("roll-up {id} is not recorded"))?;
            Ok(Leaving { files: files_of(&row)?, id: row.id, period: row.period_tag, taken_apart })
        };
        let removing: std::collections::HashSet<&str> = pending.removes.iter().map(|r| r.key.as_str()).collect();
        let apart: std::collections::BTreeSet<&str> = pending.removes.iter().filter_map(|r| r.rollup.as_deref()).collect();
        for id in apart {
            spend(2);
            changes.leaving.push(leaving(id, true).await?);
            let covered: Vec<index::RollupInput> = sql.query(index::LAKE_ROLLUP_COVERED, &[text(id)]).await?;
            changes.uncovered.extend(covered.into_iter().filter(|c| !removing.contains(c.key.as_str())));
        }
        spend(1);
        let waiting: Vec<index::LakeRollup> =
            sql.query(index::LAKE_ROLLUPS_PENDING, &[text(table), SqlValue::Int(ROLLUPS_PER_COMMIT)]).await?;
        for r in waiting {
            let files = files_of(&r);
            let why = match (&files, r.stale, r.outside) {
                (Err(e), ..) => e.clone(),
                (_, 0, 0) => String::new(),
                (_, 0, outside) => format!("it does not hold {outside} files of the roll-ups it would replace"),
                (_, stale, _) => format!("{stale} of the files it holds changed since it read them"),
            };
            if !why.is_empty() {
                changes.refused.push((r.id, why, files.unwrap_or_default()));
                continue;
            }
            spend(1);
            let members: Vec<index::RollupInput> = sql.query(index::LAKE_ROLLUP_MEMBERS, &[text(&r.id)]).await?;
            let superseded: std::collections::BTreeSet<&str> = members.iter().filter_map(|m| m.rollup.as_deref()).collect();
            for id in superseded {
                spend(1);
                changes.leaving.push(leaving(id, false).await?);
            }
            let replaces = members.iter().filter(|m| m.rollup.is_none()).cloned().collect();
            changes.arriving = Some(Arriving { id: r.id, period: r.period_tag, files: files?, replaces });
            break;
        }
        Ok(changes)
    }

    /// Exponential backoff with jitter, so that writers that collided spread out.
    fn backoff_ms(attempt: u32) -> u64 {
        let base = 10u64 << attempt.min(6);
        base / 2 + (uuid::Uuid::new_v4().as_u128() as u64) % base
    }

    /// The table's metadata as its pointer names it.
    pub async fn load<B: Blobs>(blobs: &B, pointer: &LakeTable) -> PortResult<Current> {
        let bytes = blobs.get(&pointer.metadata_key).await?.ok_or_else(|| format!("{} is missing", pointer.metadata_key))?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", pointer.metadata_key))?;
        Ok(Current { metadata, key: pointer.metadata_key.clone(), version: pointer.version })
    }

    /// Plans a full scan as a reader does: the data files snapshot `snapshot_id` (None: the
    /// current one) lists as live, read from its manifest list and manifests.
    pub async fn scan<B: Blobs>(
        blobs: &B,
        config: &LakeConfig,
        metadata: &TableMetadata,
        snapshot_id: Option<i64>,
    ) -> PortResult<Vec<manifest::DataFile>> {
        let id = snapshot_id.or(metadata.current_snapshot_id);
        let Some(snapshot) = metadata.snapshots.iter().find(|s| Some(s.snapshot_id) == id) else {
            return Ok(Vec::new());
        };
        let listed = manifest::read_manifest_list(&get(blobs, config, &snapshot.manifest_list).await?)?;
        let wanted: Vec<&ManifestFile> = listed.iter().collect();
        let manifests = read_manifests(blobs, config, &metadata.partition_specs, &wanted).await?;
        let mut files = Vec::new();
        for m in &listed {
            files.extend(manifests[&m.path].iter().filter(|e| e.status != manifest::Status::Deleted).map(|e| e.file.clone()));
        }
        Ok(files)
    }

    async fn get<B: Blobs>(blobs: &B, config: &LakeConfig, location: &str) -> PortResult<Bytes> {
        let key = config.key(location).ok_or_else(|| format!("{location} is outside the lake at {}", config.root))?;
        blobs.get(key).await?.ok_or_else(|| format!("{key} is missing").into())
    }

    async fn read_manifests<B: Blobs>(
        blobs: &B,
        config: &LakeConfig,
        specs: &[PartitionSpec],
        wanted: &[&ManifestFile],
    ) -> PortResult<HashMap<String, Vec<Entry>>> {
        futures_util::stream::iter(wanted.iter().map(|m| async move {
            let bytes = get(blobs, config, &m.path).await?;
            Ok::<_, PortError>((m.path.clone(), manifest::read_manifest(&bytes, m, specs)?))
        }))
        .buffer_unordered(CONCURRENT_OBJECTS)
        .try_collect()
        .await
    }

    async fn put_all<B: Blobs>(blobs: &B, objects: &[(String, Vec<u8>)]) -> PortResult<()> {
        futures_util::stream::iter(objects.iter().map(|(key, bytes)| blobs.put(key, Bytes::from(bytes.clone()))))
            .buffer_unordered(CONCURRENT_OBJECTS)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// The commit's D1 batch: the swap first (its changes decide), then the marks and the
    /// garbage, each fenced by the pointer naming the new metadata.
    fn swap(table: &str, current: Option<&Current>, prepared: &Prepared, now_ms: i64) -> Vec<Statement> {
        let now = &iso(now_ms as u64);
        let mut statements = Vec::new();
        if let Some(snapshot) = &prepared.snapshot {
            let oldest = SqlValue::from(prepared.metadata.oldest_sequence_number());
            let own = [text(table), text(&prepared.metadata_key), SqlValue::Int(prepared.version), oldest.clone(), text(now)];
            let committed = SqlValue::Int(snapshot.timestamp_ms);
            statements.push(match current {
                None => Statement::new(index::LAKE_CREATE, [&own[..], &[committed]].concat()),
                Some(c) => Statement::new(index::LAKE_SWAP, [&own[..], &[committed, text(&c.key)]].concat()),
            });
            let fence = |third: SqlValue| [text(table), text(&prepared.metadata_key), third];
            statements.push(Statement::new(index::LAKE_EXPIRY, [&fence(oldest)[..], &[SqlValue::Int(now_ms)]].concat()));
            statements.extend(keyed(index::LAKE_MARK_ADDED, &fence(SqlValue::Int(snapshot.snapshot_id)), &prepared.added));
            statements.extend(keyed(index::LAKE_MARK_REMOVED, &fence(SqlValue::Int(snapshot.sequence_number)), &prepared.removed));
            for (key, why) in &prepared.noted {
                statements.push(Statement::new(index::LAKE_MARK_NOTED, [&fence(text(key))[..], &[text(why)]].concat()));
            }
            // Uncovered before covered: the files of a roll-up a new one supersedes are its.
            for id in &prepared.rollups_taken_apart {
                statements.push(Statement::new(index::LAKE_MARK_UNCOVERED, fence(text(id)).to_vec()));
            }
            for id in &prepared.rollups_removed {
                let params = [&fence(text(id))[..], &[SqlValue::Int(snapshot.sequence_number)]].concat();
                statements.push(Statement::new(index::LAKE_MARK_ROLLUP_REMOVED, params));
            }
            if let Some(id) = &prepared.rollup_added {
                statements.push(Statement::new(
                    index::LAKE_MARK_ROLLUP_ADDED,
                    [&fence(text(id))[..], &[SqlValue::Int(snapshot.snapshot_id)]].concat(),
                ));
                statements.push(Statement::new(index::LAKE_MARK_COVERED, fence(text(id)).to_vec()));
            }
        }
        // Refusals are decided on the metadata the commit read (or on the new one, if it swaps).
        let decided_on = match (&prepared.snapshot, current) {
            (Some(_), _) => text(&prepared.metadata_key),
            (None, Some(c)) => text(&c.key),
            (None, None) => SqlValue::Null,
        };
        for (key, free_at) in &prepared.garbage {
            let params = [text(table), decided_on.clone(), text(key), SqlValue::Int(*free_at), text(now)];
            statements.push(Statement::new(index::LAKE_GARBAGE, params.to_vec()));
        }
        for (key, why) in &prepared.refused {
            statements.push(Statement::new(index::LAKE_MARK_REFUSED, vec![text(table), decided_on.clone(), text(key), text(why)]));
        }
        for (id, why) in &prepared.rollups_refused {
            statements.push(Statement::new(index::LAKE_MARK_ROLLUP_REFUSED, vec![text(table), decided_on.clone(), text(id), text(why)]));
        }
        statements
    }

    /// What one pass of the committer did.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct CommitPass {
        /// The tables it committed (a snapshot each, or refusals only).
        pub commits: Vec<TableCommit>,
        /// Tables whose commit failed this pass, and why; their files stay pending.
        pub failures: Vec<TableFailure>,
        /// Tables behind the index that committed within the interval, left for later.
        pub waiting: u64,
        /// When the next pass has work (ms): the earliest a waiting table may commit again, or
        /// the next interval when a table has more than one commit takes or failed. `None`:
        /// nothing is pending.
        pub next_ms: Option<i64>,
    }

    impl CommitPass {
        /// The next pass has work at `at` (ms), if not earlier.
        fn again_at(&mut self, at: i64) {
            self.next_ms = Some(self.next_ms.map_or(at, |n| n.min(at)));
        }
    }

    /// Tables one pass looks at, at most (the contract has 32).
    const TABLES_PER_PASS: i64 = 64;
    /// Table commits one pass runs at once.
    const COMMITS_AT_ONCE: usize = 4;

    /// The group commit: one pass of the tables' single committer. Every table the index holds
    /// files for that it does not list (or lists retired) gets one snapshot taking what is
    /// pending for it, unless it committed less than `commit_interval_ms` ago. So a table gets
    /// at most one snapshot per interval however many runs finish, and a run's files wait at
    /// most one interval (plus a pass).
    pub async fn commit_pending<S: Sql, B: Blobs, C: Clock>(sql: &S, blobs: &B, clock: &C, config: &LakeConfig) -> CommitPass {
        let mut pass = CommitPass::default();
        let behind: Vec<index::LakeBehind> = match sql.query(index::LAKE_TABLES_BEHIND, &[SqlValue::Int(TABLES_PER_PASS)]).await {
            Ok(behind) => behind,
            Err(e) => {
                pass.failures.push(TableFailure { table: "*".into(), error: format!("listing the tables behind: {e}") });
                pass.again_at(clock.now_ms() as i64 + config.commit_interval_ms);
                return pass;
            }
        };
        let now = clock.now_ms() as i64;
        let mut due = Vec::new();
        for table in &behind {
            let at = table.committed_ms.saturating_add(config.commit_interval_ms);
            // (0: the table has no snapshot yet.)
            if table.committed_ms > 0 && at > now {
                pass.waiting += 1;
                pass.again_at(at);
            } else {
                due.push(table.name.as_str());
            }
        }
        // An equal share of the pass's subrequests per table, so that one table cannot spend the
        // others'.
        let per_table = (config.subrequests_per_pass / due.len().max(1) as u64).max(MIN_TABLE_SUBREQUESTS);
        let commits = due.iter().map(|name| async move {
            let budget = Cell::new(per_table);
            (*name, commit_table(sql, blobs, clock, name, config, &budget).await)
        });
        let done: Vec<_> = futures_util::stream::iter(commits).buffer_unordered(COMMITS_AT_ONCE).collect().await;
        let again = now + config.commit_interval_ms;
        for (name, result) in done {
            match result {
                Ok(commit) => {
                    if commit.more {
                        pass.again_at(again);
                    }
                    pass.commits.push(commit);
                }
                Err(e) => {
                    pass.again_at(again);
                    pass.failures.push(TableFailure { table: name.to_owned(), error: e.to_string() });
                }
            }
        }
        pass.commits.sort_by(|a, b| a.table.cmp(&b.table));
        pass
    }

    /// What the clean-up did to the tables.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct Maintenance {
        pub snapshots_expired: u64,
        pub objects_deleted: u64,
        /// Tables whose maintenance failed this pass, and why (`*`: the listing itself).
        pub failures: Vec<TableFailure>,
    }

    /// A table whose maintenance failed, and why.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct TableFailure {
        pub table: String,
        pub error: String,
    }

    /// The clean-up's upkeep of the tables (it commits nothing: the committer is the tables'
    /// one writer of snapshots): snapshots past the retention expired, and objects no snapshot
    /// kept within the grace period needs deleted.
    ///
    /// Each table's work runs within its own share of the pass's subrequests and on its own: a
    /// table that fails (its metadata unreadable, R2 refusing its objects) is reported in
    /// [`Maintenance::failures`] and the pass goes on to the next. It never fails as a whole;
    /// the clean-up's other parts run whatever happens here.
    pub async fn maintain<S: Sql, B: Blobs, C: Clock>(sql: &S, blobs: &B, clock: &C, config: &LakeConfig) -> Maintenance {
        let mut report = Maintenance::default();
        let tables: Vec<LakeTable> = match sql.query(index::LAKE_TABLES, &[]).await {
            Ok(tables) => tables,
            Err(e) => {
                report.failures.push(TableFailure { table: "*".into(), error: format!("listing the tables: {e}") });
                Vec::new()
            }
        };
        let per_table = (config.subrequests_per_cleanup / tables.len().max(1) as u64).max(MIN_TABLE_SUBREQUESTS);
        for pointer in &tables {
            let budget = Cell::new(per_table);
            if let Err(error) = maintain_table(sql, blobs, clock, pointer, config, &budget, &mut report).await {
                report.failures.push(TableFailure { table: pointer.name.clone(), error: error.to_string() });
            }
        }
        report
    }

    /// Fewest subrequests a table's commit or maintenance gets in a pass, however many tables
    /// there are.
    const MIN_TABLE_SUBREQUESTS: u64 = 40;
    /// Pages of garbage (1,000 keys each) deleted per table and pass.
    const GARBAGE_PAGES: usize = 4;

    /// One table's part of [`maintain`], within `budget` subrequests.
    async fn maintain_table<S: Sql, B: Blobs, C: Clock>(
        sql: &S,
        blobs: &B,
        clock: &C,
        pointer: &LakeTable,
        config: &LakeConfig,
        budget: &Cell<u64>,
        report: &mut Maintenance,
    ) -> PortResult<()> {
        spend(budget, 3)?;
        report.snapshots_expired += expire(sql, blobs, clock, pointer, config).await?;
        let graced = SqlValue::Int(config.retention.graced(clock.now_ms()));
        for _ in 0..GARBAGE_PAGES {
            spend(budget, 3)?;
            let due: Vec<KeyRow> = sql.query(index::LAKE_GARBAGE_DUE, &[text(&pointer.name), SqlValue::Int(1000), graced.clone()]).await?;
            if due.is_empty() {
                break;
            }
            let keys: Vec<String> = due.into_iter().map(|r| r.key).collect();
            blobs.delete(&keys).await?;
            sql.batch(&keyed(index::LAKE_FORGET_GARBAGE, &[], &keys)).await?;
            report.objects_deleted += keys.len() as u64;
        }
        spend(budget, 1)?;
        sql.run(index::LAKE_FORGET_EXPIRIES, &[text(&pointer.name), graced]).await?;
        Ok(())
    }

    /// Takes `n` subrequests from `budget`, or fails when it has fewer.
    fn spend(budget: &Cell<u64>, n: u64) -> PortResult<()> {
        let left = budget.get().checked_sub(n).ok_or("the table's share of the clean-up's subrequests is spent; the next pass goes on")?;
        budget.set(left);
        Ok(())
    }

    /// Expires the table's snapshots older than the retention: a new metadata file without
    /// them, swapped in; their manifest lists become garbage. Answers how many expired (0 when
    /// another writer swapped first: the next pass expires them).
    async fn expire<S: Sql, B: Blobs, C: Clock>(
        sql: &S,
        blobs: &B,
        clock: &C,
        pointer: &LakeTable,
        config: &LakeConfig,
    ) -> PortResult<u64> {
        let current = load(blobs, pointer).await?;
        let now = clock.now_ms() as i64;
        let mut metadata = current.metadata.clone();
        let expired = metadata.expire(&config.retention, now);
        if expired.snapshots.is_empty() {
            return Ok(0);
        }
        let ids = Attempt::new(1, now);
        metadata.log_previous(&config.location(&current.key), current.metadata.last_updated_ms);
        metadata.last_updated_ms = now.max(metadata.last_updated_ms);
        let version = current.version + 1;
        let key = format!("{}/metadata/{version:05}-{}.metadata.json", commit::table_prefix(&pointer.name), ids.uuid);
        blobs.put(&key, Bytes::from(metadata.to_json())).await?;
        let prepared = Prepared {
            garbage: commit::expired_garbage(&expired, config, metadata.oldest_sequence_number()),
            metadata_key: key.clone(),
            version,
            objects: Vec::new(),
            snapshot: current.metadata.current_snapshot().cloned(),
            added: Vec::new(),
            removed: Vec::new(),
            refused: Vec::new(),
            noted: Vec::new(),
            rollup_added: None,
            rollups_removed: Vec::new(),
            rollups_taken_apart: Vec::new(),
            rollups_refused: Vec::new(),
            metadata,
        };
        let changes = sql.batch(&swap(&pointer.name, Some(&current), &prepared, now)).await?;
        if changes.first() == Some(&1) {
            return Ok(expired.snapshots.len() as u64);
        }
        let _ = blobs.delete(&[key]).await;
        Ok(0)
    }
}

#[cfg(test)]
mod tests;

/// What a reader needs of the tables, for a mirror of the bucket (a local reader's stand-in for
/// R2's S3 API): every object the kept snapshots of a table reference.
pub mod mirror {
    use super::commit::LakeConfig;
    use super::manifest::{self, Status};
    use super::metadata::TableMetadata;

    /// The bucket keys of every object `metadata`'s snapshots reference (manifest lists,
    /// manifests, live data files), each once, fetching the metadata it walks through `get`
    /// (which answers an object's bytes by key; a mirror keeps them).
    pub async fn referenced(
        metadata: &TableMetadata,
        root: &str,
        mut get: impl AsyncFnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Vec<String>, String> {
        let lake = LakeConfig { root: root.to_owned(), ..LakeConfig::default() };
        let key = |location: &str| lake.key(location).map(str::to_owned).ok_or_else(|| format!("{location} is outside {root}"));
        let mut keys = std::collections::BTreeSet::new();
        for snapshot in &metadata.snapshots {
            let list = key(&snapshot.manifest_list)?;
            let listed = manifest::read_manifest_list(&get(&list).await?)?;
            keys.insert(list);
            for m in listed {
                let path = key(&m.path)?;
                if !keys.insert(path.clone()) {
                    continue;
                }
                for e in manifest::read_manifest(&get(&path).await?, &m, &metadata.partition_specs)? {
                    if e.status != Status::Deleted {
                        keys.insert(key(&e.file.path)?);
                    }
                }
            }
        }
        Ok(keys.into_iter().collect())
    }
}
