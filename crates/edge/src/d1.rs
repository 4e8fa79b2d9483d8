//! D1 parameters and results, so that handlers bind values without JS plumbing.

use serde::de::DeserializeOwned;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

/// A value bound to a D1 statement.
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
    Null,
}

impl From<&Param<'_>> for JsValue {
    fn from(p: &Param<'_>) -> JsValue {
        match p {
            Param::Text(s) => JsValue::from_str(s),
            // D1 numbers are JS numbers: exact up to 2^53, far above any size or time here.
            Param::Int(n) => JsValue::from_f64(*n as f64),
            Param::Null => JsValue::NULL,
        }
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Param::Text(s)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(s: Option<&'a str>) -> Self {
        s.map_or(Param::Null, Param::Text)
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Param::Int(n)
    }
}

impl From<u64> for Param<'_> {
    fn from(n: u64) -> Self {
        Param::Int(n as i64)
    }
}

/// Prepares `sql` with `params` bound as `?1, ?2, …`.
pub fn statement(db: &D1Database, sql: &str, params: &[Param<'_>]) -> Result<D1PreparedStatement> {
    let values: Vec<JsValue> = params.iter().map(JsValue::from).collect();
    db.prepare(sql).bind(&values)
}

/// Every row of a query.
pub async fn all<T: DeserializeOwned>(db: &D1Database, sql: &str, params: &[Param<'_>]) -> Result<Vec<T>> {
    statement(db, sql, params)?.all().await?.results()
}

/// The first row of a query, if any.
pub async fn first<T: DeserializeOwned>(db: &D1Database, sql: &str, params: &[Param<'_>]) -> Result<Option<T>> {
    statement(db, sql, params)?.first(None).await
}

/// Runs a statement and answers how many rows it changed.
pub async fn run(db: &D1Database, sql: &str, params: &[Param<'_>]) -> Result<u64> {
    let result = statement(db, sql, params)?.run().await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) as u64)
}
