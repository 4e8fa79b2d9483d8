//! Test support shared by the unit tests: SQLite with every D1 migration applied, standing in
//! for D1 behind the same ports, and a clock that moves only when slept.

use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use rusqlite::types::{Null, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};
use serde_json::{Map, Value};

use crate::commit::{SqlValue, Statement};
use crate::index;
use crate::workflow::Clock;

/// An in-memory SQLite database with `migrations/*.sql` applied in order, as D1 applies them.
pub fn migrated_sqlite() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
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

impl crate::workflow::CheckpointStore for Sqlite {
    async fn output(&self, run: &str, step: &str) -> Result<Option<String>, String> {
        self.with(|c| c.query_row(index::STEP_OUTPUT, params![run, step], |r| r.get(0)).optional().map_err(|e| e.to_string()))
    }

    async fn save(&self, run: &str, step: &str, output: &str, attempts: u32, duration_ms: u64) -> Result<(), String> {
        self.with(|c| {
            c.execute(index::SAVE_STEP, params![run, step, output, attempts, duration_ms as i64, "2026-11-28T00:00:00Z"])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(feature = "engine")]
impl crate::compaction::Sql for Sqlite {
    async fn rows(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Map<String, Value>>, String> {
        self.with(|c| {
            let mut stmt = c.prepare(sql).map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
        })
    }

    async fn batch(&self, statements: &[Statement]) -> Result<Vec<u64>, String> {
        let mut conn = self.0.lock().unwrap();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        let mut changes = Vec::new();
        for s in statements {
            changes.push(tx.execute(&s.sql, params_from_iter(s.params.iter().map(bind))).map_err(|e| e.to_string())? as u64);
        }
        tx.commit().map_err(|e| e.to_string())?;
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
