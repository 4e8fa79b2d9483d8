//! PostgREST requests turned into one SQL statement each, with every value a bound parameter.
//!
//! Identifiers come from the request but are checked against the schema cache before they are
//! quoted into SQL; values travel as text parameters and are cast to the column's type by
//! PostgreSQL, so that `gt.10` compares numbers on a bigint column and dates on a timestamptz.
//! Rows are built from JSON bodies with `json_populate_recordset`, as PostgREST does.
//! Every statement returns one row: the JSON array of the affected rows, and their count.

use crate::error::ApiError;
use crate::query::{Filter, IsValue, Op, Order, QueryParams, Select};
use crate::schema::Table;

/// A bound parameter: text, or an array of text for `in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    TextArray(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

/// How an insert treats rows whose key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// A conflict is an error (409).
    Error,
    /// `resolution=merge-duplicates`: update the existing row.
    Merge,
    /// `resolution=ignore-duplicates`: keep the existing row.
    Ignore,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

struct Builder<'a> {
    table: &'a Table,
    params: Vec<Param>,
}

impl<'a> Builder<'a> {
    fn new(table: &'a Table) -> Self {
        Self { table, params: Vec::new() }
    }

    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    fn column(&self, name: &str) -> Result<String, ApiError> {
        self.table.column(name)?;
        Ok(format!("_t.{}", quote(name)))
    }

    fn type_of(&self, name: &str) -> Result<&'a str, ApiError> {
        Ok(&self.table.column(name)?.sql_type)
    }

    fn qualified_table(&self) -> String {
        format!("{}.{}", quote(&self.table.schema), quote(&self.table.name))
    }

    fn filter(&mut self, f: &Filter) -> Result<String, ApiError> {
        let col = self.column(&f.column)?;
        let ty = self.type_of(&f.column)?;
        let mut compare = |op: &str, v: &str| {
            let p = self.bind(Param::Text(v.to_owned()));
            format!("{col} {op} ({p}::text)::{ty}")
        };
        let expr = match &f.op {
            Op::Eq(v) => compare("=", v),
            Op::Neq(v) => compare("<>", v),
            Op::Gt(v) => compare(">", v),
            Op::Gte(v) => compare(">=", v),
            Op::Lt(v) => compare("<", v),
            Op::Lte(v) => compare("<=", v),
            Op::In(vs) => {
                let p = self.bind(Param::TextArray(vs.clone()));
                format!("{col} = ANY(({p}::text[])::{ty}[])")
            }
            Op::Is(v) => format!(
                "{col} IS {}",
                match v {
                    IsValue::Null => "NULL",
                    IsValue::True => "TRUE",
                    IsValue::False => "FALSE",
                    IsValue::Unknown => "UNKNOWN",
                }
            ),
        };
        Ok(if f.negated { format!("NOT ({expr})") } else { expr })
    }

    fn where_clause(&mut self, filters: &[Filter]) -> Result<String, ApiError> {
        if filters.is_empty() {
            return Ok(String::new());
        }
        let parts = filters.iter().map(|f| self.filter(f)).collect::<Result<Vec<_>, _>>()?;
        Ok(format!(" WHERE {}", parts.join(" AND ")))
    }

    fn order_clause(&self, order: &[Order]) -> Result<String, ApiError> {
        if order.is_empty() {
            return Ok(String::new());
        }
        let parts = order
            .iter()
            .map(|o| {
                let mut s = self.column(&o.column)?;
                s.push_str(if o.descending { " DESC" } else { " ASC" });
                match o.nulls_first {
                    Some(true) => s.push_str(" NULLS FIRST"),
                    Some(false) => s.push_str(" NULLS LAST"),
                    None => {}
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(format!(" ORDER BY {}", parts.join(", ")))
    }

    fn select_list(&self, select: &Select) -> Result<String, ApiError> {
        match select {
            Select::All => Ok("_t.*".into()),
            Select::Columns(cols) => Ok(cols.iter().map(|c| self.column(c)).collect::<Result<Vec<_>, _>>()?.join(", ")),
        }
    }

    /// Wraps a data-modifying statement so that it answers like a read.
    fn finish(self, inner: String) -> Statement {
        Statement { sql: format!("WITH _w AS ({inner}) SELECT coalesce(json_agg(_w), '[]')::text, count(*) FROM _w"), params: self.params }
    }
}

pub(crate) fn select(table: &Table, q: &QueryParams) -> Result<Statement, ApiError> {
    let mut b = Builder::new(table);
    let cols = b.select_list(&q.select)?;
    let from = b.qualified_table();
    let filters = b.where_clause(&q.filters)?;
    let order = b.order_clause(&q.order)?;
    let mut page = String::new();
    if let Some(n) = q.limit {
        page.push_str(&format!(" LIMIT {n}"));
    }
    if let Some(n) = q.offset {
        page.push_str(&format!(" OFFSET {n}"));
    }
    Ok(b.finish(format!("SELECT {cols} FROM {from} AS _t{filters}{order}{page}")))
}

/// `payload_columns` are the keys of the JSON body (or the `columns` parameter); `rows_json`
/// is the body as a JSON array.
pub(crate) fn insert(
    table: &Table,
    q: &QueryParams,
    payload_columns: &[String],
    rows_json: String,
    resolution: Resolution,
) -> Result<Statement, ApiError> {
    let mut b = Builder::new(table);
    let body = b.bind(Param::Text(rows_json));
    let target = b.qualified_table();
    let cols = payload_columns.iter().map(|c| b.table.column(c).map(|_| quote(c))).collect::<Result<Vec<_>, _>>()?.join(", ");
    let conflict = match (resolution, &q.on_conflict) {
        (Resolution::Error, _) => String::new(),
        (_, None) => {
            let pk = &table.primary_key;
            if pk.is_empty() {
                return Err(ApiError::pgrst(400, "PGRST100", "on_conflict is required: the table has no primary key"));
            }
            conflict_clause(&b, pk, payload_columns, resolution)?
        }
        (_, Some(keys)) => conflict_clause(&b, keys, payload_columns, resolution)?,
    };
    let returning = b.select_list(&q.select)?;
    Ok(b.finish(format!(
        "INSERT INTO {target} AS _t ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{target}, ({body}::text)::json){conflict} RETURNING {returning}"
    )))
}

fn conflict_clause(b: &Builder<'_>, keys: &[String], payload_columns: &[String], resolution: Resolution) -> Result<String, ApiError> {
    for k in keys {
        b.table.column(k)?;
    }
    let target = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let updates: Vec<String> =
        payload_columns.iter().filter(|c| !keys.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", quote(c))).collect();
    Ok(if resolution == Resolution::Ignore || updates.is_empty() {
        format!(" ON CONFLICT ({target}) DO NOTHING")
    } else {
        format!(" ON CONFLICT ({target}) DO UPDATE SET {}", updates.join(", "))
    })
}

/// Supabase runs PostgREST with `safeupdate`: an UPDATE or DELETE must say which rows.
fn require_filters(q: &QueryParams, verb: &str) -> Result<(), ApiError> {
    if q.filters.is_empty() {
        return Err(ApiError::pgrst(400, "21000", format!("{verb} requires a WHERE clause")));
    }
    Ok(())
}

pub(crate) fn update(table: &Table, q: &QueryParams, payload_columns: &[String], row_json: String) -> Result<Statement, ApiError> {
    require_filters(q, "UPDATE")?;
    let mut b = Builder::new(table);
    let body = b.bind(Param::Text(row_json));
    let target = b.qualified_table();
    let sets = payload_columns
        .iter()
        .map(|c| b.table.column(c).map(|_| format!("{0} = _p.{0}", quote(c))))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    if sets.is_empty() {
        return Err(ApiError::pgrst(400, "PGRST102", "the body names no column to update"));
    }
    let filters = b.where_clause(&q.filters)?;
    let returning = b.select_list(&q.select)?;
    Ok(b.finish(format!(
        "UPDATE {target} AS _t SET {sets} FROM json_populate_record(NULL::{target}, ({body}::text)::json) AS _p{filters} RETURNING {returning}"
    )))
}

pub(crate) fn delete(table: &Table, q: &QueryParams) -> Result<Statement, ApiError> {
    require_filters(q, "DELETE")?;
    let mut b = Builder::new(table);
    let target = b.qualified_table();
    let filters = b.where_clause(&q.filters)?;
    let returning = b.select_list(&q.select)?;
    Ok(b.finish(format!("DELETE FROM {target} AS _t{filters} RETURNING {returning}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Column;

    fn table() -> Table {
        let col = |name: &str, ty: &str| Column { name: name.into(), sql_type: ty.into() };
        Table {
            schema: "public".into(),
            name: "processing_metrics".into(),
            columns: vec![
                col("id", "uuid"),
                col("status", "metric_status"),
                col("input_bytes", "bigint"),
                col("finished_at", "timestamp with time zone"),
            ],
            primary_key: vec!["id".into()],
        }
    }

    fn q(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams::parse(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn reads_bind_every_value_and_cast_to_the_column_type() {
        let s = select(
            &table(),
            &q(&[
                ("select", "id,status"),
                ("status", "in.(queued,running)"),
                ("input_bytes", "gt.10"),
                ("finished_at", "not.is.null"),
                ("order", "input_bytes.desc"),
                ("limit", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.sql,
            "WITH _w AS (SELECT _t.\"id\", _t.\"status\" FROM \"public\".\"processing_metrics\" AS _t \
             WHERE _t.\"status\" = ANY(($1::text[])::metric_status[]) AND _t.\"input_bytes\" > ($2::text)::bigint \
             AND NOT (_t.\"finished_at\" IS NULL) ORDER BY _t.\"input_bytes\" DESC LIMIT 5) \
             SELECT coalesce(json_agg(_w), '[]')::text, count(*) FROM _w"
        );
        assert_eq!(s.params, vec![Param::TextArray(vec!["queued".into(), "running".into()]), Param::Text("10".into())]);
    }

    #[test]
    fn an_injection_attempt_stays_a_value() {
        let s = select(&table(), &q(&[("status", "eq.x'); drop table t; --")])).unwrap();
        assert!(!s.sql.contains("drop"));
        assert_eq!(s.params, vec![Param::Text("x'); drop table t; --".into())]);
    }

    #[test]
    fn unknown_columns_are_refused() {
        for pairs in [vec![("select", "nope")], vec![("nope", "eq.1")], vec![("order", "nope")]] {
            let err = select(&table(), &q(&pairs)).unwrap_err();
            assert_eq!((err.status, err.code.as_str()), (400, "PGRST204"), "{pairs:?}");
        }
    }

    #[test]
    fn upserts_merge_every_non_key_column() {
        let cols = vec!["id".to_string(), "status".to_string()];
        let s = insert(&table(), &q(&[]), &cols, "[]".into(), Resolution::Merge).unwrap();
        assert!(s.sql.contains("ON CONFLICT (\"id\") DO UPDATE SET \"status\" = EXCLUDED.\"status\""), "{}", s.sql);
        let s = insert(&table(), &q(&[]), &cols, "[]".into(), Resolution::Ignore).unwrap();
        assert!(s.sql.contains("ON CONFLICT (\"id\") DO NOTHING"));
        let s = insert(&table(), &q(&[]), &cols, "[]".into(), Resolution::Error).unwrap();
        assert!(!s.sql.contains("ON CONFLICT"));
    }

    #[test]
    fn updates_and_deletes_need_a_filter() {
        let cols = vec!["status".to_string()];
        assert_eq!(update(&table(), &q(&[]), &cols, "{}".into()).unwrap_err().code, "21000");
        assert_eq!(delete(&table(), &q(&[])).unwrap_err().code, "21000");
        let s = update(&table(), &q(&[("id", "eq.1")]), &cols, "{}".into()).unwrap();
        assert!(s.sql.contains("SET \"status\" = _p.\"status\""));
        assert_eq!(s.params.len(), 2);
    }
}
