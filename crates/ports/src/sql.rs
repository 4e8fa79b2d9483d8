//! Bound values and statements, as D1 takes them.

/// A bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// A text parameter.
    Text(String),
    /// An integer parameter (D1 numbers are exact far beyond any size or count here).
    Int(i64),
    /// SQL `NULL`.
    Null,
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(s: String) -> Self {
        SqlValue::Text(s)
    }
}

impl From<Option<&str>> for SqlValue {
    fn from(s: Option<&str>) -> Self {
        s.map_or(SqlValue::Null, SqlValue::from)
    }
}

impl From<i64> for SqlValue {
    fn from(n: i64) -> Self {
        SqlValue::Int(n)
    }
}

/// Sizes and counts: D1 numbers are exact far beyond any of them.
impl From<u64> for SqlValue {
    fn from(n: u64) -> Self {
        SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// One statement of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL, with `?1, ?2, …` placeholders.
    pub sql: String,
    /// The values bound to them, in order.
    pub params: Vec<SqlValue>,
}

impl Statement {
    /// Statement `sql` with `params` bound.
    pub fn new(sql: &str, params: Vec<SqlValue>) -> Self {
        Self { sql: sql.to_owned(), params }
    }
}

/// A text parameter.
pub fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_owned())
}

/// D1 binds at most 100 parameters per statement; keys are bound in chunks below it.
pub const KEYS_PER_STATEMENT: usize = 90;

/// Statements over `keys` in chunks D1 binds: `sql` with `{keys}` for the placeholders, after
/// the `leading` parameters.
pub fn keyed(sql: &str, leading: &[SqlValue], keys: &[String]) -> Vec<Statement> {
    keys.chunks(KEYS_PER_STATEMENT)
        .map(|chunk| {
            let first = leading.len() + 1;
            let placeholders: Vec<String> = (first..first + chunk.len()).map(|i| format!("?{i}")).collect();
            let mut params = leading.to_vec();
            params.extend(chunk.iter().map(|k| text(k)));
            Statement { sql: sql.replace("{keys}", &placeholders.join(", ")), params }
        })
        .collect()
}
