//! PostgREST's URL grammar, the part the FUSOU services use: `select` column lists, horizontal
//! filters (`eq neq gt gte lt lte in is`, each optionally negated with `not.`), `order`,
//! `limit` and `offset`, and the write parameters `on_conflict` and `columns`.

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Select {
    All,
    Columns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Eq(String),
    Neq(String),
    Gt(String),
    Gte(String),
    Lt(String),
    Lte(String),
    In(Vec<String>),
    Is(IsValue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsValue {
    Null,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub column: String,
    pub negated: bool,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub column: String,
    pub descending: bool,
    pub nulls_first: Option<bool>,
}

/// Everything a request's query string says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryParams {
    pub select: Select,
    pub filters: Vec<Filter>,
    pub order: Vec<Order>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub on_conflict: Option<Vec<String>>,
    pub columns: Option<Vec<String>>,
}

fn parse_error(message: String) -> ApiError {
    ApiError::pgrst(400, "PGRST100", message)
}

fn identifier(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok { Ok(name.to_owned()) } else { Err(parse_error(format!("\"{raw}\" is not a column name"))) }
}

fn identifier_list(raw: &str) -> Result<Vec<String>, ApiError> {
    raw.split(',').map(identifier).collect()
}

fn number(key: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| parse_error(format!("\"{raw}\" is not a valid {key}")))
}

/// Splits `(a,b,"c,d")` into its items, honouring double quotes and backslash escapes.
fn in_list(raw: &str) -> Result<Vec<String>, ApiError> {
    let inner = raw
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| parse_error(format!("\"{raw}\" is not a list: write in.(a,b)")))?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Ok(items);
    }
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in inner.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(parse_error(format!("unterminated quote in \"{raw}\"")));
    }
    items.push(current);
    Ok(items)
}

fn filter(column: &str, raw: &str) -> Result<Filter, ApiError> {
    let column = identifier(column)?;
    let (negated, rest) = match raw.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (op, value) = rest.split_once('.').ok_or_else(|| parse_error(format!("\"{raw}\" is not a filter: write op.value")))?;
    let value = value.to_owned();
    let op = match op {
        "eq" => Op::Eq(value),
        "neq" => Op::Neq(value),
        "gt" => Op::Gt(value),
        "gte" => Op::Gte(value),
        "lt" => Op::Lt(value),
        "lte" => Op::Lte(value),
        "in" => Op::In(in_list(&value)?),
        "is" => Op::Is(match value.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => return Err(parse_error(format!("\"{value}\" is not null, true, false or unknown"))),
        }),
        other => return Err(parse_error(format!("unknown or unsupported operator \"{other}\""))),
    };
    Ok(Filter { column, negated, op })
}

fn order(raw: &str) -> Result<Vec<Order>, ApiError> {
    raw.split(',')
        .map(|term| {
            let mut parts = term.split('.');
            let column = identifier(parts.next().unwrap_or_default())?;
            let mut o = Order { column, descending: false, nulls_first: None };
            for modifier in parts {
                match modifier {
                    "asc" => o.descending = false,
                    "desc" => o.descending = true,
                    "nullsfirst" => o.nulls_first = Some(true),
                    "nullslast" => o.nulls_first = Some(false),
                    other => return Err(parse_error(format!("unknown order modifier \"{other}\""))),
                }
            }
            Ok(o)
        })
        .collect()
}

impl QueryParams {
    /// Parses decoded `key=value` pairs in their order.
    pub(crate) fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ApiError> {
        let mut q = QueryParams {
            select: Select::All,
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            on_conflict: None,
            columns: None,
        };
        for (key, value) in pairs {
            match key {
                "select" if value.trim() == "*" => q.select = Select::All,
                "select" => q.select = Select::Columns(identifier_list(value)?),
                "order" => q.order = order(value)?,
                "limit" => q.limit = Some(number(key, value)?),
                "offset" => q.offset = Some(number(key, value)?),
                "on_conflict" => q.on_conflict = Some(identifier_list(value)?),
                "columns" => q.columns = Some(identifier_list(value)?),
                column => q.filters.push(filter(column, value)?),
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<QueryParams, ApiError> {
        QueryParams::parse(pairs.iter().copied())
    }

    #[test]
    fn a_full_read() {
        let q = parse(&[
            ("select", "id,status"),
            ("dataset_id", "eq.ds-1"),
            ("status", "not.in.(success,\"a,b\")"),
            ("finished_at", "is.null"),
            ("order", "created_at.desc.nullslast,id"),
            ("limit", "10"),
            ("offset", "20"),
        ])
        .unwrap();
        assert_eq!(q.select, Select::Columns(vec!["id".into(), "status".into()]));
        assert_eq!(q.filters[0].op, Op::Eq("ds-1".into()));
        assert!(q.filters[1].negated);
        assert_eq!(q.filters[1].op, Op::In(vec!["success".into(), "a,b".into()]));
        assert_eq!(q.filters[2].op, Op::Is(IsValue::Null));
        assert_eq!(
            q.order,
            vec![
                Order { column: "created_at".into(), descending: true, nulls_first: Some(false) },
                Order { column: "id".into(), descending: false, nulls_first: None },
            ]
        );
        assert_eq!((q.limit, q.offset), (Some(10), Some(20)));
    }

    #[test]
    fn values_keep_dots_and_may_be_empty() {
        let q = parse(&[("key", "eq.a.b.c"), ("x", "eq."), ("y", "in.()")]).unwrap();
        assert_eq!(q.filters[0].op, Op::Eq("a.b.c".into()));
        assert_eq!(q.filters[1].op, Op::Eq(String::new()));
        assert_eq!(q.filters[2].op, Op::In(vec![]));
    }

    #[test]
    fn malformed_queries_are_400_pgrst100() {
        for pairs in [
            vec![("select", "id;drop table x")],
            vec![("a\"b", "eq.1")],
            vec![("id", "like.x")],
            vec![("id", "eq")],
            vec![("id", "in.a,b")],
            vec![("id", "in.(\"a)")],
            vec![("id", "is.maybe")],
            vec![("limit", "-1")],
            vec![("order", "id.sideways")],
        ] {
            let err = parse(&pairs).unwrap_err();
            assert_eq!((err.status, err.code.as_str()), (400, "PGRST100"), "{pairs:?}");
        }
    }
}
