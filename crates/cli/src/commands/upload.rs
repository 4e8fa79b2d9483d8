//! `upload` and `load`: many uploads from concurrent clients, as the FUSOU client makes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fusou_synth::{FragmentSpec, fragment};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{Outcome, Uploader};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Upload the fragments `fusou gen` wrote here (otherwise generate `--count` of them).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    count: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, env = "FUSOU_DATASET")]
    dataset: String,
    #[arg(long, default_value = "2025-11-05")]
    period: String,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, env = "FUSOU_TOKEN")]
    token: String,
}

#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    #[arg(long, default_value_t = 2000)]
    uploads: usize,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Each client uploads to its own dataset named `<prefix>-<client>`, unless `--datasets`.
    #[arg(long, default_value = "load")]
    dataset_prefix: String,
    /// Spread the uploads over this many datasets (`<prefix>-<n>`, upload i to dataset i mod
    /// N), whichever client sends them; 0: one dataset per client.
    #[arg(long, default_value_t = 0)]
    datasets: usize,
    /// Then measure how long after the last upload's answer every row is in the open tables
    /// (through the Iceberg REST catalog, with `--lake-key`).
    #[arg(long)]
    freshness: bool,
    /// A key that opens the open tables: LAKE_READ_SECRET (or the operator secret).
    #[arg(long, env = "LAKE_READ_SECRET")]
    lake_key: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A user token, or several separated by commas: dataset d is uploaded by user d mod N.
    #[arg(long, env = "FUSOU_TOKEN")]
    token: String,
    /// Also time the same number of `GET /openapi.json` (a static answer through the same
    /// Worker runtime) at the same concurrency, and print the ratio.
    #[arg(long)]
    baseline: bool,
    /// Then wait for compaction and check that every uploaded row is in the compacted outputs
    /// exactly once.
    #[arg(long)]
    verify: bool,
    /// How long `--verify` waits for compaction, in seconds.
    #[arg(long, default_value_t = 900)]
    verify_timeout: u64,
}

/// A fragment to upload: its bytes and its `table_offsets` string.
struct Job {
    bytes: Vec<u8>,
    offsets: String,
}

fn generated(count: u64, seed: u64) -> Vec<Job> {
    generated_with(count, seed, |_| {})
}

/// Generates fragments, handing each one to `inspect` before keeping only its bytes.
fn generated_with(count: u64, seed: u64, mut inspect: impl FnMut(&fusou_synth::Fragment)) -> Vec<Job> {
    (0..count)
        .map(|n| {
            let f = fragment(&FragmentSpec { seed: seed.wrapping_add(n), ..FragmentSpec::default() });
            inspect(&f);
            Job { offsets: f.table_offsets_string(), bytes: f.bytes }
        })
        .collect()
}

fn from_dir(dir: &std::path::Path) -> Result<Vec<Job>, String> {
    let mut jobs = Vec::new();
    for n in 0.. {
        let (bin, offsets) = super::fragment_paths(dir, n);
        if !bin.exists() {
            break;
        }
        jobs.push(Job {
            bytes: std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?,
            offsets: std::fs::read_to_string(&offsets).map_err(|e| format!("{}: {e}", offsets.display()))?,
        });
    }
    if jobs.is_empty() {
        return Err(format!("no fragments in {} (write some with `fusou gen`)", dir.display()));
    }
    Ok(jobs)
}

/// What a run did.
#[derive(Default)]
struct Tally {
    stored: usize,
    skipped: usize,
    errors: Vec<String>,
    latencies: Vec<Duration>,
    handshakes: Vec<Duration>,
    bodies: Vec<Duration>,
    worker_cpu: Vec<Duration>,
}

/// Which dataset job `i` of client `c` goes to, and which of the uploaders (users) sends it.
type Destination = Arc<dyn Fn(usize, usize) -> (String, usize) + Send + Sync>;

/// Runs `jobs` from `clients` concurrent clients, each job to its [`Destination`].
async fn run(
    uploaders: Arc<Vec<Uploader>>,
    jobs: Arc<Vec<Job>>,
    clients: usize,
    period: Arc<String>,
    dataset: Destination,
    progress: ProgressBar,
) -> (Tally, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|c| {
            let (uploaders, jobs, next, period, progress) =
                (uploaders.clone(), jobs.clone(), next.clone(), period.clone(), progress.clone());
            let dataset = dataset.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let t = Instant::now();
                    let (name, user) = dataset(c, i);
                    match uploaders[user % uploaders.len()].upload(&name, &period, &job.bytes, &job.offsets).await {
                        Ok((outcome, timings)) => {
                            match outcome {
                                Outcome::Stored => tally.stored += 1,
                                Outcome::Skipped => tally.skipped += 1,
                            }
                            tally.handshakes.push(timings.handshake);
                            tally.bodies.extend(timings.body);
                            tally.worker_cpu.extend(timings.worker_cpu_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0)));
                        }
                        Err(e) => tally.errors.push(e),
                    }
                    tally.latencies.push(t.elapsed());
                    progress.inc(1);
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.await.unwrap_or_default();
        total.stored += t.stored;
        total.skipped += t.skipped;
        total.errors.extend(t.errors);
        total.latencies.extend(t.latencies);
        total.handshakes.extend(t.handshakes);
        total.bodies.extend(t.bodies);
        total.worker_cpu.extend(t.worker_cpu);
    }
    progress.finish_and_clear();
    (total, started.elapsed())
}

fn bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} uploads {per_sec} eta {eta}").expect("a valid template"));
    bar
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(clients: usize, mut tally: Tally, elapsed: Duration, bytes: u64) -> Result<(), String> {
    tally.latencies.sort();
    let n = tally.latencies.len();
    println!(
        "clients {clients:>3}  uploads {n:>5}  stored {:>5}  skipped {:>4}  errors {:>3}  {:>7.1} uploads/s  {:>6.2} MB/s  p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms",
        tally.stored,
        tally.skipped,
        tally.errors.len(),
        n as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        percentile(&tally.latencies, 0.50),
        percentile(&tally.latencies, 0.95),
        percentile(&tally.latencies, 0.99),
    );
    tally.handshakes.sort();
    tally.bodies.sort();
    tally.worker_cpu.sort();
    // A service that sends no `Server-Timing: cpu` (an older version) has no figure to print.
    let cpu = if tally.worker_cpu.is_empty() {
        "-".to_owned()
    } else {
        format!("p50 {:.1} ms  p99 {:.1} ms", percentile(&tally.worker_cpu, 0.50), percentile(&tally.worker_cpu, 0.99))
    };
    println!(
        "             handshake p50 {:>7.1} ms  body p50 {:>7.1} ms  Worker CPU per upload (Server-Timing, both phases): {cpu}",
        percentile(&tally.handshakes, 0.50),
        percentile(&tally.bodies, 0.50),
    );
    if let Some(first) = tally.errors.first() {
        return Err(format!("{} uploads failed; the first: {first}", tally.errors.len()));
    }
    Ok(())
}

pub(crate) async fn upload(url: &str, args: Args) -> Result<(), String> {
    let jobs = match &args.dir {
        Some(dir) => from_dir(dir)?,
        None => generated(args.count, args.seed),
    };
    let bytes = jobs.iter().map(|j| j.bytes.len() as u64).sum();
    let uploaders = Arc::new(vec![Uploader::new(url, args.token)]);
    let n = jobs.len();
    let dataset = args.dataset.clone();
    let (tally, elapsed) =
        run(uploaders, Arc::new(jobs), args.clients, Arc::new(args.period), Arc::new(move |_, _| (dataset.clone(), 0)), bar(n)).await;
    report(args.clients, tally, elapsed, bytes)
}

/// `n` requests of a static route from `clients` concurrent clients: answers per second and p50.
async fn baseline(url: &str, n: usize, clients: usize) -> Result<(f64, f64), String> {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (http, next, target) = (http.clone(), next.clone(), format!("{url}/openapi.json"));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let t = Instant::now();
                    let ok = http.get(&target).send().await.map(|r| r.status().is_success()).unwrap_or(false);
                    if !ok {
                        return Err(format!("GET {target} failed"));
                    }
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    all.sort();
    Ok((all.len() as f64 / elapsed.as_secs_f64(), percentile(&all, 0.5)))
}

pub(crate) async fn load(url: &str, args: LoadArgs) -> Result<(), String> {
    if args.baseline {
        let (rate, p50) = baseline(url, args.uploads, args.clients).await?;
        println!("clients {:>3}  baseline GET /openapi.json: {rate:>7.1} answers/s  p50 {p50:>7.1} ms", args.clients);
    }
    eprintln!("generating {} fragments…", args.uploads);
    let mut expected = super::verify::Digest::default();
    let mut uploaded_rows = std::collections::BTreeMap::<String, i64>::new();
    let jobs = generated_with(args.uploads as u64, args.seed, |f| {
        for s in &f.segments {
            *uploaded_rows.entry(s.table.as_str().to_owned()).or_default() += s.batch.num_rows() as i64;
            if args.verify {
                expected.add_batch(s.table.as_str(), &s.batch);
            }
        }
    });
    let bytes = jobs.iter().map(|j| j.bytes.len() as u64).sum();
    // Several users (`--token a,b,…`) share the datasets out, dataset d to user d mod users, as
    // many admirals would (a user may make only so many datasets a minute).
    let tokens: Vec<&str> = args.token.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    if args.verify && tokens.len() > 1 {
        return Err("--verify reads the datasets as their owner: give one --token".into());
    }
    let uploaders = Arc::new(tokens.iter().map(|t| Uploader::new(url, (*t).to_owned())).collect::<Vec<_>>());
    let prefix = args.dataset_prefix.clone();
    let spread = args.datasets;
    let dataset = move |c: usize, i: usize| {
        let d = if spread > 0 { i % spread } else { c };
        (format!("{prefix}-{d}"), d)
    };
    let lake_key = match (args.freshness, &args.lake_key) {
        (true, None) => return Err("--freshness reads the open tables: give --lake-key (LAKE_READ_SECRET)".into()),
        (true, Some(key)) => Some(key.clone()),
        (false, _) => None,
    };
    let before = match &lake_key {
        Some(key) => super::freshness::tables(url, key).await?,
        None => Default::default(),
    };
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (tally, elapsed) =
        run(uploaders, Arc::new(jobs), args.clients, Arc::new("2025-11-05".into()), Arc::new(dataset), bar(args.uploads)).await;
    let answered = Instant::now();
    let stored = tally.stored;
    report(args.clients, tally, elapsed, bytes)?;
    if let Some(key) = &lake_key {
        let timeout = Duration::from_secs(args.verify_timeout);
        super::freshness::measure(url, key, &before, &uploaded_rows, answered, started_ms, timeout).await?;
    }
    if args.verify {
        if stored != args.uploads {
            return Err(format!(
                "only {stored} of {} uploads were stored (a rerun skips what the datasets hold): use a new --dataset-prefix",
                args.uploads
            ));
        }
        let n = if args.datasets > 0 { args.datasets } else { args.clients.max(1) };
        let datasets: Vec<String> = (0..n).map(|c| format!("{}-{c}", args.dataset_prefix)).collect();
        super::verify::verify(url, &args.token, &datasets, &expected, Duration::from_secs(args.verify_timeout)).await?;
    }
    Ok(())
}
