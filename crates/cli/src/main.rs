//! `fusou`: try, operate and load-test the FUSOU pipeline, against the local stack or a
//! deployed service. Uploads go exactly as the FUSOU client sends them: two phases,
//! `file_size` and `table_offsets` as strings.

mod client;
mod commands;

/// mimalloc (merging many small Parquet files is allocation-heavy), counted for the peak-memory
/// figures of `fusou compact`.
#[global_allocator]
static ALLOCATOR: fusou_core::measure::Counting<mimalloc::MiMalloc> = fusou_core::measure::Counting::new(mimalloc::MiMalloc);

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fusou", version, about = "Try, operate and load-test the FUSOU battle-data pipeline")]
struct Cli {
    /// The upload service.
    #[arg(long, global = true, env = "FUSOU_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic fragments shaped like the client's (with their offsets) to a folder.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Largest number of rows per table.
        #[arg(long, default_value_t = 40)]
        max_rows: u64,
        /// Also write every segment as its own Parquet file under `<out>/segments/<table>/`.
        #[arg(long)]
        segments: bool,
        /// Instead of client-sized fragments, fragments of about this many bytes (the largest
        /// uploads), whose rows `--tables` tables share.
        #[arg(long)]
        bytes: Option<u64>,
        /// With `--bytes`: how many tables (1: a single segment of one row group).
        #[arg(long, default_value_t = 1, requires = "bytes")]
        tables: usize,
    },
    /// Run the compaction engine over a folder of fragments (single-threaded).
    Compact(commands::compact::Args),
    /// Upload fragments exactly as the FUSOU client does.
    Upload(commands::upload::Args),
    /// Upload N generated fragments from C concurrent clients and report throughput and latency.
    Load(commands::upload::LoadArgs),
    /// Mint a development user token from the local Supabase stand-in.
    Token {
        #[arg(long, env = "SUPABASE_URL", default_value = "http://127.0.0.1:54321")]
        supabase_url: String,
        /// The stand-in's secret key (default: read from .local/secrets.env).
        #[arg(long, env = "SUPABASE_SERVICE_KEY")]
        service_key: Option<String>,
        /// The user to sign in as: one email, one user, so tokens minted later own the same
        /// datasets (the default is the user `scripts/dev.sh` prints a token for).
        #[arg(long, default_value = "admiral@fusou.local")]
        email: String,
    },
    /// Show a dataset's state.
    Status {
        dataset: String,
        #[arg(long, env = "FUSOU_TOKEN")]
        token: String,
    },
    /// Wait until a dataset has nothing pending and no run in progress (with `--compact`, ask
    /// for its compaction first, as its owner's repair request does).
    Wait {
        dataset: String,
        #[arg(long, env = "FUSOU_TOKEN")]
        token: String,
        /// Request a compaction of the dataset before waiting.
        #[arg(long)]
        compact: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// A dataset's recent compaction runs, as the service recorded them (newest first).
    Runs {
        dataset: String,
        #[arg(long, env = "FUSOU_TOKEN")]
        token: String,
        /// One JSON object per run, per line (the metrics row), instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a dataset's compacted outputs.
    Fetch {
        dataset: String,
        #[arg(long, env = "FUSOU_TOKEN")]
        token: String,
        #[arg(long, default_value = "outputs")]
        out: PathBuf,
    },
    /// Mirror the open tables' files where their metadata says they are (a local stack's
    /// `LAKE_LOCATION`, a `file://` directory), so that Iceberg readers read them (operator).
    LakeSync {
        #[arg(long, env = "FUSOU_OPERATOR_SECRET")]
        operator_secret: String,
    },
    /// Request compaction of every dataset that needs it (operator).
    Trigger {
        #[arg(long, env = "FUSOU_OPERATOR_SECRET")]
        operator_secret: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen { out, count, seed, max_rows, segments, bytes, tables } => {
            let shape = match bytes {
                Some(bytes) => commands::Shape::Sized { bytes, tables },
                None => commands::Shape::Client { max_rows },
            };
            commands::generate(&out, count, seed, shape, segments)
        }
        Command::Compact(args) => commands::compact::compact(args),
        Command::Upload(args) => commands::upload::upload(&cli.url, args).await,
        Command::Load(args) => commands::upload::load(&cli.url, args).await,
        Command::Token { supabase_url, service_key, email } => commands::token(&supabase_url, service_key, &email).await,
        Command::Status { dataset, token } => commands::status(&cli.url, &dataset, &token).await,
        Command::Wait { dataset, token, compact, timeout } => commands::wait(&cli.url, &dataset, &token, compact, timeout).await,
        Command::Runs { dataset, token, json } => commands::runs(&cli.url, &dataset, &token, json).await,
        Command::Fetch { dataset, token, out } => commands::fetch(&cli.url, &dataset, &token, &out).await,
        Command::LakeSync { operator_secret } => commands::lake::sync(&cli.url, &operator_secret).await,
        Command::Trigger { operator_secret } => commands::trigger(&cli.url, &operator_secret).await,
    };
    if let Err(e) = result {
        eprintln!("fusou: {e}");
        std::process::exit(1);
    }
}
