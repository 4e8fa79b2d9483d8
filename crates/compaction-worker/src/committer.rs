//! The open tables' committer: one Durable Object (`LAKE_COMMITTER`, named `lake`), the tables'
//! single writer of snapshots. Runs end at their D1 commit, leaving their files pending; they
//! (and the clean-up) only *notify* the committer, one request per queue batch. Its alarm runs
//! a pass of [`fusou_lake::commit_pending`]: each table behind the index gets one snapshot of
//! everything pending for it, at most once per `LAKE_COMMIT_INTERVAL_SECONDS`, and the alarm is
//! set again for when the next table is due. With nothing pending, no alarm is set: an idle lake
//! costs nothing.
//!
//! Why one object for the lake rather than one per table: a run touches up to 32 tables, and
//! one notice per batch (not per table) keeps the runs' subrequests flat; one pass commits the
//! tables concurrently, well within an invocation's subrequests. Why an alarm rather than a
//! cron: it runs only when there is work, at the moment the interval allows, and it runs the
//! same under `wrangler dev` as deployed. The object's requests are processed one at a time and
//! an alarm never overlaps itself, so passes never race each other; the compare-and-swap on
//! each table's pointer stays the fence against anything else (the clean-up's expiry).

use fusou_edge::{WorkerClock, log};
use fusou_ports::meter::{Metered, Operations};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

use crate::context::Ctx;
use crate::ports::{D1, R2};

/// The one object's name.
const NAME: &str = "lake";

/// Where the object keeps its last pass's summary, and the sum of every pass's.
const LAST_PASS: &str = "last_pass";
const TOTAL: &str = "total";

/// What the committer's passes did, all together, since the object was created.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Total {
    passes: u64,
    snapshots: u64,
    /// Their billable operations (R2 and D1: a pass makes no queue operation).
    operations: Operations,
}

/// The committer's status for the operator: its last pass, its totals and when its alarm is
/// set (`None`: nothing pending).
pub(crate) async fn status(ctx: &Ctx) -> worker::Result<Value> {
    let stub = ctx.lake_committer()?.get_by_name(NAME)?;
    let asked = async { stub.fetch_with_str("https://committer/status").await?.json::<Value>().await };
    ctx.remote
        .call(fusou_edge::remote::Service::Committer, "the committer's status", asked)
        .await
        .map_err(|e| worker::Error::RustError(e.to_string()))
}

/// Tells the committer that files are pending. Failures are logged, never fatal: the files
/// stay pending for the next notice (the next batch, the clean-up's).
pub(crate) async fn notify(ctx: &Ctx, source: &str) {
    let sent = async {
        let stub = ctx.lake_committer()?.get_by_name(NAME)?;
        stub.fetch_with_str("https://committer/notify").await
    };
    match ctx.remote.call(fusou_edge::remote::Service::Committer, "the committer's notice", sent).await {
        Ok(_) => {}
        Err(e) => log::warn("committer.notify_failed", json!({ "source": source, "error": e.to_string() })),
    }
}

#[durable_object]
pub struct LakeCommitter {
    state: State,
    env: Env,
}

impl DurableObject for LakeCommitter {
    fn new(state: State, env: Env) -> Self {
        Self { state, env }
    }

    /// `/status`: the last pass and the passes' operations so far. Anything else is a notice: a
    /// pass at once, unless one is already set (which then takes these files too).
    async fn fetch(&self, req: Request) -> Result<Response> {
        let storage = self.state.storage();
        if req.path() == "/status" {
            return Response::from_json(&json!({
                "lastPass": storage.get::<Value>(LAST_PASS).await?,
                "total": storage.get::<Total>(TOTAL).await?.unwrap_or_default(),
                "alarmMs": storage.get_alarm().await?,
            }));
        }
        if storage.get_alarm().await?.is_none() {
            storage.set_alarm(0).await?;
        }
        Response::ok("noted")
    }

    /// A pass, then the alarm for the next one, if anything is left.
    async fn alarm(&self) -> Result<Response> {
        let ctx = Ctx::load(self.env.clone()).map_err(|e| worker::Error::RustError(e.to_string()))?;
        let db = D1(ctx.db()?);
        let bucket = R2 { bucket: ctx.bucket()?, remote: ctx.remote };
        let bucket = Metered::new(&bucket, &ctx.meter);
        let pass = fusou_lake::commit_pending(&db, &bucket, &WorkerClock, &ctx.run.lake).await;
        let event = if pass.failures.is_empty() { "committer.pass" } else { "committer.pass_partly_failed" };
        let snapshots = pass.commits.iter().filter(|c| c.snapshot_id.is_some()).count();
        let attempts: u32 = pass.commits.iter().map(|c| c.attempts).sum();
        let operations = ctx.meter.operations();
        let summary = json!({
            "atMs": fusou_edge::now_ms(),
            "snapshots": snapshots,
            "attempts": attempts,
            "failures": pass.failures.len(),
            "waiting": pass.waiting,
            "nextMs": pass.next_ms,
            "operations": operations,
        });
        let mut logged = summary.clone();
        logged["pass"] = json!(pass);
        log::info(event, logged);
        // For the operator's status (`GET /compact/status`); a failure to keep it is only logged.
        let storage = self.state.storage();
        let kept = async {
            let total = storage.get::<Total>(TOTAL).await?.unwrap_or_default();
            let total = Total {
                passes: total.passes + 1,
                snapshots: total.snapshots + snapshots as u64,
                operations: total.operations.plus(operations),
            };
            storage.put(LAST_PASS, &summary).await?;
            storage.put(TOTAL, &total).await
        };
        if let Err(e) = kept.await {
            log::warn("committer.status_not_kept", json!({ "error": e.to_string() }));
        }
        if let Some(next_ms) = pass.next_ms {
            let offset = (next_ms - fusou_edge::now_ms() as i64).max(0);
            storage.set_alarm(offset).await?;
        }
        Response::ok("passed")
    }
}
