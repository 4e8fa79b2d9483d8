//! A local stand-in for the part of Supabase the FUSOU services use: PostgREST (`/rest/v1/`)
//! and Auth's public keys (`/auth/v1/.well-known/jwks.json`), backed by a real PostgreSQL that
//! holds the project's own `supabase/migrations/`. It exists for local runs and tests only;
//! production points `SUPABASE_URL` at a real Supabase project.

mod app;
mod db;
mod error;
mod keys;
mod query;
mod schema;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use fusou_auth::signing::Es256Key;

#[derive(Parser)]
#[command(version, about = "Local stand-in for Supabase's REST and Auth APIs (development and tests only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the platform bootstrap and the project's migrations (as the database owner).
    Migrate {
        #[arg(long, env = "SUPABASE_LOCAL_ADMIN_URL")]
        database_url: String,
        #[arg(long, default_value = "supabase/local/bootstrap.sql")]
        bootstrap: PathBuf,
        #[arg(long, default_value = "supabase/migrations")]
        migrations: PathBuf,
    },
    /// Serve the API.
    Serve {
        #[arg(long, env = "SUPABASE_LOCAL_LISTEN", default_value = "127.0.0.1:54321")]
        listen: String,
        /// The URL clients use to reach this server; token issuer is `<url>/auth/v1`.
        #[arg(long, env = "SUPABASE_URL", default_value = "http://127.0.0.1:54321")]
        public_url: String,
        /// Connection string of the login role the API runs as (`authenticator`).
        #[arg(long, env = "SUPABASE_LOCAL_DATABASE_URL")]
        database_url: String,
        #[arg(long, env = "SUPABASE_PUBLISHABLE_KEY")]
        publishable_key: String,
        #[arg(long, env = "SUPABASE_SERVICE_KEY")]
        secret_key: String,
        /// PKCS#8 PEM file of the ES256 signing key; made on first start.
        #[arg(long, env = "SUPABASE_LOCAL_SIGNING_KEY")]
        signing_key_file: PathBuf,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
}

fn load_or_create_key(path: &PathBuf) -> Result<Es256Key, Box<dyn std::error::Error>> {
    let pem = match std::fs::read_to_string(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = Es256Key::generate("new").to_pkcs8_pem();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &pem)?;
            #[cfg(unix)]
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            pem
        }
        Err(e) => return Err(e.into()),
    };
    // The key id is derived from the public key, so that it is stable across restarts.
    let x = serde_json::to_value(Es256Key::from_pkcs8_pem("k", &pem)?.public_jwk())?["x"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(12)
        .collect::<String>();
    Ok(Es256Key::from_pkcs8_pem(format!("local-{x}"), &pem)?)
}

/// Whether the API is reachable. Tests simulate an outage: SIGUSR1 closes the listening socket
/// (callers get "connection refused", as from a project that is down), SIGUSR2 opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    Up,
    Down,
    Exit,
}

async fn serve(listen: &str, state: Arc<app::AppState>) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, mut rx) = tokio::sync::watch::channel(Availability::Up);
    let mut down = signal(SignalKind::user_defined1())?;
    let mut up = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = tokio::signal::ctrl_c() => Availability::Exit,
                _ = down.recv() => Availability::Down,
                _ = up.recv() => Availability::Up,
            };
            let _ = tx.send(next);
            if next == Availability::Exit {
                break;
            }
        }
    });
    loop {
        let now = *rx.borrow_and_update();
        match now {
            Availability::Exit => return Ok(()),
            Availability::Down => {
                println!("supabase-local: down (simulated outage)");
                rx.changed().await?;
                continue;
            }
            Availability::Up => {}
        }
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("supabase-local: up");
        let mut until = rx.clone();
        axum::serve(listener, app::router(state.clone()))
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|a| *a != Availability::Up).await;
            })
            .await?;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Migrate { database_url, bootstrap, migrations } => {
            let applied = db::migrate(&database_url, &bootstrap, &migrations).await?;
            println!("supabase-local: {} migration(s) applied {:?}", applied.len(), applied);
        }
        Command::Serve { listen, public_url, database_url, publishable_key, secret_key, signing_key_file, connections } => {
            if secret_key.len() < 16 || publishable_key.len() < 16 {
                return Err("the API keys must be at least 16 characters".into());
            }
            let pool = db::Pool::open(&database_url, connections).await?;
            let schema = schema::SchemaCache::load(&*pool.get().await).await?;
            let keys = keys::Keys {
                publishable: publishable_key,
                secret: secret_key,
                signing: load_or_create_key(&signing_key_file)?,
                issuer: fusou_auth::issuer_for(&public_url),
            };
            let tables = schema.len();
            let state = Arc::new(app::AppState { pool, schema, keys, fault: Default::default() });
            println!("supabase-local: serving {tables} tables on http://{listen} (issuer {})", state.keys.issuer);
            serve(&listen, state).await?;
        }
    }
    Ok(())
}
