//! D1 behind [`Remote`]: every query can time out (and be delayed on a test stack), and
//! statements bind the core's [`SqlValue`], the one parameter type of every statement.

use std::rc::Rc;

use fusou_core::index::SqlValue;
use fusou_ports::meter::Meter;
use serde::de::DeserializeOwned;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result};

use crate::remote::{Remote, RemoteError, Service};

fn js(v: &SqlValue) -> JsValue {
    match v {
        SqlValue::Text(s) => JsValue::from_str(s),
        // D1 numbers are JS numbers: exact up to 2^53, far above any size or time here.
        SqlValue::Int(n) => JsValue::from_f64(*n as f64),
        SqlValue::Null => JsValue::NULL,
    }
}

/// The battle-data index. Every statement, and the rows D1 says it read and wrote, are
/// counted into the invocation's meter (what D1 bills).
pub struct Db {
    inner: D1Database,
    remote: Remote,
    meter: Rc<Meter>,
}

impl Db {
    pub fn new(inner: D1Database, remote: Remote, meter: Rc<Meter>) -> Self {
        Self { inner, remote, meter }
    }

    /// Counts `statements` sent in one call, and what D1 answered they cost.
    fn count(&self, statements: u64, results: &[&D1Result]) {
        let (mut read, mut written) = (0, 0);
        for meta in results.iter().filter_map(|r| r.meta().ok().flatten()) {
            read += meta.rows_read.unwrap_or(0) as u64;
            written += meta.rows_written.unwrap_or(0) as u64;
        }
        self.meter.add(|o| {
            o.d1_statements += statements;
            o.d1_rows_read += read;
            o.d1_rows_written += written;
            o.subrequests += 1;
        });
    }

    /// `sql` with `params` bound as `?1, ?2, …`, for a batch.
    pub fn statement(&self, sql: &str, params: &[SqlValue]) -> Result<D1PreparedStatement, RemoteError> {
        let values: Vec<JsValue> = params.iter().map(js).collect();
        self.inner.prepare(sql).bind(&values).map_err(|e| RemoteError::failed(Service::D1, "binding a statement", e))
    }

    /// Every row of a query.
    pub async fn all<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<T>, RemoteError> {
        let statement = self.statement(sql, params)?;
        let result = self.remote.call(Service::D1, "a query", statement.all()).await?;
        self.count(1, &[&result]);
        result.results().map_err(|e| RemoteError::failed(Service::D1, "decoding rows", e))
    }

    /// The first row of a query, if any.
    pub async fn first<T: DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> Result<Option<T>, RemoteError> {
        Ok(self.all(sql, params).await?.into_iter().next())
    }

    /// Runs a statement and answers how many rows it changed.
    pub async fn run(&self, sql: &str, params: &[SqlValue]) -> Result<u64, RemoteError> {
        let statement = self.statement(sql, params)?;
        let result = self.remote.call(Service::D1, "a statement", statement.run()).await?;
        self.count(1, &[&result]);
        Ok(changes(&result))
    }

    /// Runs statements atomically, in order (D1 rolls the whole batch back if one fails). An
    /// empty batch changes nothing (D1 itself refuses one).
    pub async fn batch(&self, statements: Vec<D1PreparedStatement>) -> Result<Vec<D1Result>, RemoteError> {
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let n = statements.len() as u64;
        let results = self.remote.call(Service::D1, "a batch", self.inner.batch(statements)).await?;
        self.count(n, &results.iter().collect::<Vec<_>>());
        Ok(results)
    }
}

/// The rows a statement changed.
pub fn changes(result: &D1Result) -> u64 {
    result.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0) as u64
}
