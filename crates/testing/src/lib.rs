//! Test support shared by the unit tests: SQLite with every D1 migration applied, standing in
//! for D1 behind the same ports, R2 and the dataset registry in memory, and a clock that moves
//! only when slept. A dev-dependency only: no Worker links it.

// Not every public item of this crate is documented yet (row types and settings fields
// above all): the workspace denies `missing_docs`, and this crate opts out until it passes.
#![allow(missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use rusqlite::types::{Null, ValueRef};
use rusqlite::{Connection, ToSql, params, params_from_iter};
use serde_json::{Map, Value};

use fusou_core::index;
use fusou_ports::{Blobs, Checkpoint, CheckpointStore, Clock, PortError, PortResult, Sql, SqlValue, Statement};
use serde::de::DeserializeOwned;

/// A realtime compaction request for `dataset`, the whole dataset.
pub fn realtime_message(dataset: &str) -> fusou_core::message::CompactionMessage {
    fusou_core::message::CompactionMessage {
        dataset_id: fusou_contract::ids::DatasetId::parse(dataset).unwrap(),
        triggered_at: "2026-11-28T00:00:00Z".parse().unwrap(),
        priority: fusou_core::message::Priority::Realtime,
        metric_id: None,
        table: None,
        period_tag: None,
    }
}

/// An in-memory SQLite database with `migrations/*.sql` applied in order, as D1 applies them.
/// The checkout is found when the test runs (cargo sets `CARGO_MANIFEST_DIR` then too): a
/// shared target directory may hold a binary built from another checkout of the same sources.
pub fn migrated_sqlite() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let mut files: Vec<_> = std::fs::read_dir(format!("{manifest}/../../migrations")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        conn.execute_batch(&std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    conn
}

fn bind(v: &SqlValue) -> &dyn ToSql {
    match v {
        SqlValue::Text(s) => s,
        SqlValue::Int(n) => n,
        SqlValue::Null => &Null,
    }
}

/// D1's ports over SQLite: the same SQL, the same batch atomicity.
pub struct Sqlite(pub Mutex<Connection>);

impl Sqlite {
    pub fn migrated() -> Self {
        Self(Mutex::new(migrated_sqlite()))
    }

    /// Runs `f` on the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.0.lock().unwrap())
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.with(|c| c.query_row(sql, [], |r| r.get(0)).unwrap())
    }
}

impl fusou_ports::CheckpointStore for Sqlite {
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare(index::STEP_OUTPUTS).map_err(PortError::new)?;
            let rows = stmt.query_map(params![run], |r| Ok((r.get(0)?, r.get(1)?))).map_err(PortError::new)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(PortError::new)
        })
    }

    async fn save(&self, run: &str, checkpoint: &fusou_ports::Checkpoint<'_>) -> PortResult<String> {
        let fusou_ports::Checkpoint { step, output, attempts, duration_ms, completed_at_ms } = *checkpoint;
        let completed_at = index::iso(completed_at_ms);
        self.with(|c| {
            c.query_row(index::SAVE_STEP, params![run, step, output, attempts, duration_ms as i64, completed_at], |r| r.get(0))
                .map_err(PortError::new)
        })
    }
}

impl fusou_ports::Sql for Sqlite {
    /// Each row as D1 answers it (a JSON object of its columns), then decoded as `T`.
    async fn query<T: serde::de::DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> PortResult<Vec<T>> {
        let rows: Vec<Map<String, Value>> = self.with(|c| {
            let mut stmt = c.prepare(sql).map_err(PortError::new)?;
            let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
            let rows = stmt
                .query_map(params_from_iter(params.iter().map(bind)), |r| {
                    let mut row = Map::new();
                    for (i, name) in names.iter().enumerate() {
                        let v = match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(n) => Value::from(n),
                            ValueRef::Real(f) => Value::from(f),
                            ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                            ValueRef::Blob(_) => Value::Null,
                        };
                        row.insert(name.clone(), v);
                    }
                    Ok(row)
                })
                .map_err(PortError::new)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(PortError::new)
        })?;
        rows.into_iter().map(|row| serde_json::from_value(Value::Object(row)).map_err(|e| PortError::new(format!("{sql}: {e}")))).collect()
    }

    async fn run(&self, sql: &str, params: &[SqlValue]) -> PortResult<u64> {
        self.with(|c| c.execute(sql, params_from_iter(params.iter().map(bind))).map(|n| n as u64).map_err(PortError::new))
    }

    async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>> {
        // As D1 does: the core must never send an empty batch.
        if statements.is_empty() {
            return Err("No SQL statements detected.".into());
        }
        let mut conn = self.0.lock().unwrap();
        let tx = conn.transaction().map_err(PortError::new)?;
        let mut changes = Vec::new();
        for s in statements {
            changes.push(tx.execute(&s.sql, params_from_iter(s.params.iter().map(bind))).map_err(PortError::new)? as u64);
        }
        tx.commit().map_err(PortError::new)?;
        Ok(changes)
    }
}

/// Time that moves only when slept; every sleep is recorded.
#[derive(Default)]
pub struct FakeClock {
    pub now: Cell<u64>,
    pub slept: RefCell<Vec<u64>>,
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    async fn sleep(&self, ms: u64) {
        self.slept.borrow_mut().push(ms);
        self.now.set(self.now.get() + ms);
    }
}

/// R2 in memory, with multipart uploads, and an optional fault on the n-th write.
#[derive(Default)]
pub struct Memory {
    pub objects: RefCell<HashMap<String, Bytes>>,
    pub uploads: RefCell<HashMap<String, Vec<(u16, Bytes)>>>,
    pub writes: Cell<u32>,
    pub fail_write: Cell<Option<u32>>,
    /// Every GET fails while set, as when R2 does not answer (a timeout of 30 s, the binding's).
    pub fail_reads: Cell<bool>,
    /// Every GET of a key under this prefix fails while set.
    pub fail_reads_under: RefCell<Option<String>>,
}

impl Memory {
    fn write(&self) -> PortResult<()> {
        self.writes.set(self.writes.get() + 1);
        if self.fail_write.get() == Some(self.writes.get()) {
            return Err("injected: the isolate died".into());
        }
        Ok(())
    }
}

impl fusou_ports::Blobs for Memory {
    async fn get(&self, key: &str) -> PortResult<Option<Bytes>> {
        if self.fail_reads.get() || self.fail_reads_under.borrow().as_ref().is_some_and(|p| key.starts_with(p.as_str())) {
            return Err(PortError::timed_out("injected: R2 did not answer", 30_000));
        }
        Ok(self.objects.borrow().get(key).cloned())
    }
    async fn put(&self, key: &str, bytes: Bytes) -> PortResult<()> {
        self.write()?;
        self.objects.borrow_mut().insert(key.into(), bytes);
        Ok(())
    }
    async fn create_multipart(&self, key: &str) -> PortResult<String> {
        let id = format!("{key}#{}", self.uploads.borrow().len());
        self.uploads.borrow_mut().insert(id.clone(), Vec::new());
        Ok(id)
    }
    async fn upload_part(&self, _key: &str, id: &str, number: u16, bytes: Bytes) -> PortResult<String> {
        self.write()?;
        self.uploads.borrow_mut().get_mut(id).ok_or("no such upload")?.push((number, bytes));
        Ok(format!("etag-{number}"))
    }
    async fn complete_multipart(&self, key: &str, id: &str, parts: Vec<(u16, String)>) -> PortResult<()> {
        let uploaded = self.uploads.borrow_mut().remove(id).ok_or("no such upload")?;
        assert_eq!(parts.len(), uploaded.len());
        let sizes: Vec<usize> = uploaded.iter().map(|(_, b)| b.len()).collect();
        assert!(sizes[..sizes.len() - 1].windows(2).all(|w| w[0] == w[1]), "parts of one size but the last");
        let whole: Vec<u8> = uploaded.into_iter().flat_map(|(_, b)| b.to_vec()).collect();
        self.objects.borrow_mut().insert(key.into(), Bytes::from(whole));
        Ok(())
    }
    async fn abort_multipart(&self, _key: &str, id: &str) -> PortResult<()> {
        self.uploads.borrow_mut().remove(id).map(|_| ()).ok_or_else(|| "no such upload".into())
    }
    async fn delete(&self, keys: &[String]) -> PortResult<()> {
        assert!(keys.len() <= 1000, "R2 deletes at most 1,000 keys per call");
        let mut objects = self.objects.borrow_mut();
        keys.iter().for_each(|k| {
            objects.remove(k);
        });
        Ok(())
    }
}

/// Fragment `f` of `dataset` uploaded under `key` as the upload Worker stores one: its object,
/// its row (period 2025-11-05, its key as its hash) and its dataset marked.
pub fn store_fragment(db: &Sqlite, blobs: &Memory, dataset: &str, key: &str, f: &fusou_synth::Fragment) {
    store_fragment_of(db, blobs, dataset, "2025-11-05", key, f)
}

/// As [`store_fragment`], of period `period`.
pub fn store_fragment_of(db: &Sqlite, blobs: &Memory, dataset: &str, period: &str, key: &str, f: &fusou_synth::Fragment) {
    db.with(|c| {
        c.execute(index::CLAIM_DATASET, params![dataset, "owner", "t0"]).unwrap();
        let row = params![key, dataset, "port_table", period, key, f.bytes.len() as i64, f.table_offsets_string(), "owner", "t0"];
        c.execute(index::INSERT_FRAGMENT, row).unwrap();
    });
    blobs.objects.borrow_mut().insert(key.into(), Bytes::from(f.bytes.clone()));
}

/// The catalog (Supabase) in memory; `down` makes every call fail as an unreachable one would.
#[derive(Default)]
pub struct FakeRegistry {
    pub down: Cell<bool>,
    pub datasets: RefCell<Vec<(String, String)>>,
}

impl fusou_ports::DatasetRegistry for FakeRegistry {
    async fn ensure_dataset(&self, dataset: &str, owner: &str) -> PortResult<()> {
        if self.down.get() {
            return Err("connection refused".into());
        }
        let mut known = self.datasets.borrow_mut();
        if !known.iter().any(|(d, _)| d == dataset) {
            known.push((dataset.to_string(), owner.to_owned()));
        }
        Ok(())
    }
}

/// SQL and R2 whose every call yields once to the executor first, so that concurrent commits
/// interleave at every call as they would over the network.
pub struct Interleaved<'a> {
    pub db: &'a Sqlite,
    pub blobs: &'a Memory,
    pub clock: FakeClock,
    /// Queries answered so far.
    pub queries: Cell<u32>,
}

impl<'a> Interleaved<'a> {
    pub fn new(db: &'a Sqlite, blobs: &'a Memory) -> Self {
        let clock = FakeClock::default();
        clock.now.set(1_800_000_000_000);
        Interleaved { db, blobs, clock, queries: Cell::new(0) }
    }
}

/// Time as the fake clock keeps it, where a sleep lets the other tasks run meanwhile (a
/// millisecond a turn), as a backoff does.
impl Clock for Interleaved<'_> {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
    async fn sleep(&self, ms: u64) {
        for _ in 0..ms {
            YieldOnce(false).await;
        }
        self.clock.sleep(ms).await;
    }
}

impl CheckpointStore for Interleaved<'_> {
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
        YieldOnce(false).await;
        self.db.outputs(run).await
    }
    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String> {
        YieldOnce(false).await;
        self.db.save(run, checkpoint).await
    }
}

pub struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Sql for Interleaved<'_> {
    async fn query<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> PortResult<Vec<T>> {
        YieldOnce(false).await;
        self.queries.set(self.queries.get() + 1);
        self.db.query(sql, params).await
    }
    async fn run(&self, sql: &str, params: &[SqlValue]) -> PortResult<u64> {
        YieldOnce(false).await;
        self.db.run(sql, params).await
    }
    async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>> {
        YieldOnce(false).await;
        self.db.batch(statements).await
    }
}

impl Blobs for Interleaved<'_> {
    async fn get(&self, key: &str) -> PortResult<Option<Bytes>> {
        YieldOnce(false).await;
        self.blobs.get(key).await
    }
    async fn put(&self, key: &str, bytes: Bytes) -> PortResult<()> {
        YieldOnce(false).await;
        self.blobs.put(key, bytes).await
    }
    async fn create_multipart(&self, key: &str) -> PortResult<String> {
        self.blobs.create_multipart(key).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> PortResult<String> {
        self.blobs.upload_part(key, upload_id, number, bytes).await
    }
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> PortResult<()> {
        self.blobs.complete_multipart(key, upload_id, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> PortResult<()> {
        self.blobs.abort_multipart(key, upload_id).await
    }
    async fn delete(&self, keys: &[String]) -> PortResult<()> {
        YieldOnce(false).await;
        self.blobs.delete(keys).await
    }
}
