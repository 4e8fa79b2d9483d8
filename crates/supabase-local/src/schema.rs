//! The schema cache: the tables and columns of `public`, read once at start as PostgREST does.
//! Every identifier in a request is checked against it before it reaches SQL.

use std::collections::HashMap;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    /// The column's type as `format_type` writes it (`bigint`, `timestamp with time zone`, …).
    pub sql_type: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Result<&Column, ApiError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| {
            ApiError::pgrst(400, "PGRST204", format!("Could not find the '{name}' column of '{}' in the schema cache", self.name))
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    tables: HashMap<String, Table>,
}

impl SchemaCache {
    pub(crate) async fn load(client: &tokio_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                        coalesce(a.attnum = ANY(i.indkey), false)
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                 ORDER BY c.relname, a.attnum",
                &[],
            )
            .await?;
        let mut tables: HashMap<String, Table> = HashMap::new();
        for row in rows {
            let (table, column): (String, String) = (row.get(0), row.get(1));
            let entry = tables.entry(table.clone()).or_insert_with(|| Table {
                schema: "public".into(),
                name: table,
                columns: Vec::new(),
                primary_key: Vec::new(),
            });
            if row.get::<_, bool>(3) {
                entry.primary_key.push(column.clone());
            }
            entry.columns.push(Column { name: column, sql_type: row.get(2) });
        }
        Ok(Self { tables })
    }

    pub(crate) fn table(&self, name: &str) -> Result<&Table, ApiError> {
        self.tables
            .get(name)
            .ok_or_else(|| ApiError::pgrst(404, "PGRST205", format!("Could not find the table 'public.{name}' in the schema cache")))
    }

    pub(crate) fn len(&self) -> usize {
        self.tables.len()
    }
}
