//! Connections to the real PostgreSQL, migrations, and running one API request as one
//! transaction under the caller's role, as PostgREST does.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::error::ApiError;
use crate::keys::Caller;
use crate::sql::{Param, Statement};

pub(crate) async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("supabase-local: database connection lost: {e}");
        }
    });
    Ok(client)
}

/// A fixed set of connections handed out in turn; a request holds one for its transaction.
pub(crate) struct Pool {
    clients: Vec<Mutex<Client>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) async fn open(url: &str, size: usize) -> Result<Self, tokio_postgres::Error> {
        let mut clients = Vec::with_capacity(size);
        for _ in 0..size.max(1) {
            clients.push(Mutex::new(connect(url).await?));
        }
        Ok(Self { clients, next: AtomicUsize::new(0) })
    }

    pub(crate) async fn get(&self) -> MutexGuard<'_, Client> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].lock().await
    }
}

/// The result of one statement: the affected rows as a JSON array, and how many there were.
pub(crate) struct Rows {
    pub json: String,
    pub count: i64,
}

/// Runs `stmt` as `caller` in its own transaction. With `singular`, anything but exactly one
/// row rolls the transaction back and answers 406, as PostgREST does for
/// `Accept: application/vnd.pgrst.object+json`.
pub(crate) async fn run(pool: &Pool, caller: &Caller, stmt: &Statement, singular: bool) -> Result<Rows, ApiError> {
    let pg = |e: tokio_postgres::Error| ApiError::from_postgres(&e, caller.is_authenticated());
    let mut client = pool.get().await;
    let tx = client.transaction().await.map_err(pg)?;
    let claims = caller.claims.to_string();
    tx.execute("SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)", &[&caller.role, &claims])
        .await
        .map_err(pg)?;
    let params: Vec<&(dyn ToSql + Sync)> = stmt
        .params
        .iter()
        .map(|p| match p {
            Param::Text(s) => s as &(dyn ToSql + Sync),
            Param::TextArray(v) => v as &(dyn ToSql + Sync),
        })
        .collect();
    let row = tx.query_one(&stmt.sql, &params).await.map_err(pg)?;
    let rows = Rows { json: row.get(0), count: row.get(1) };
    if singular && rows.count != 1 {
        tx.rollback().await.map_err(pg)?;
        return Err(ApiError::pgrst(406, "PGRST116", "JSON object requested, multiple (or no) rows returned")
            .with_details(format!("The result contains {} rows", rows.count)));
    }
    tx.commit().await.map_err(pg)?;
    Ok(rows)
}

/// Applies `bootstrap` (idempotent), then every file of `migrations` not yet recorded in
/// `supabase_migrations.schema_migrations`, in name order, each in its own transaction.
pub(crate) async fn migrate(url: &str, bootstrap: &Path, migrations: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut client = connect(url).await?;
    client.batch_execute(&std::fs::read_to_string(bootstrap)?).await?;
    let mut files: Vec<_> = std::fs::read_dir(migrations)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let version = name.split('_').next().unwrap_or(&name).to_owned();
        let done = client.query_opt("SELECT 1 FROM supabase_migrations.schema_migrations WHERE version = $1", &[&version]).await?.is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(&std::fs::read_to_string(&file)?).await?;
        tx.execute("INSERT INTO supabase_migrations.schema_migrations (version) VALUES ($1)", &[&version]).await?;
        tx.commit().await?;
        applied.push(name);
    }
    Ok(applied)
}
