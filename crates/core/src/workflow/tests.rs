//! The step runner over SQLite (with the D1 migrations and the D1 statements) and a fake clock.

use std::cell::Cell;

use futures::executor::block_on;
use rusqlite::{OptionalExtension, params};

use super::*;
use fusou_ports::PortResult;
use fusou_testing::{FakeClock, Sqlite};

/// The attempts a step's checkpoint records.
fn attempts(db: &Sqlite, run: &str, step: &str) -> Option<u32> {
    db.with(|c| {
        c.query_row("SELECT attempts FROM workflow_steps WHERE run_id = ?1 AND step = ?2", params![run, step], |r| r.get(0))
            .optional()
            .unwrap()
    })
}

const QUICK: StepConfig =
    StepConfig { retries: RetryPolicy { limit: 2, delay_ms: 100, backoff: Backoff::Exponential }, timeout_ms: 30_000 };

#[test]
fn backoff_delays() {
    let p = |backoff| RetryPolicy { limit: 5, delay_ms: 10, backoff };
    let delays = |policy: RetryPolicy| (1..=4).map(|n| policy.delay_before(n)).collect::<Vec<_>>();
    assert_eq!(delays(p(Backoff::Constant)), [10, 10, 10, 10]);
    assert_eq!(delays(p(Backoff::Linear)), [10, 20, 30, 40]);
    assert_eq!(delays(p(Backoff::Exponential)), [10, 20, 40, 80]);
    assert_eq!(p(Backoff::Exponential).delay_before(200), 10 << 32, "no overflow");
}

#[test]
fn a_rerun_skips_completed_steps() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    let calls = Cell::new(0);
    let first = block_on(async {
        let mut run = Run::new("run-1", &store, &clock);
        let a: u32 = run
            .step("a", &QUICK, || async {
                calls.set(calls.get() + 1);
                Ok(7)
            })
            .await
            .unwrap();
        let b: String = run
            .step("b", &QUICK, || async {
                calls.set(calls.get() + 1);
                Ok(format!("b{a}"))
            })
            .await
            .unwrap();
        (a, b, run.records().to_vec())
    });
    assert_eq!((first.0, first.1.as_str()), (7, "b7"));
    assert!(first.2.iter().all(|r| r.ran && r.attempts == 1));

    // The same run again (a redelivered message): nothing runs, the stored outputs come back.
    let again = block_on(async {
        let mut run = Run::new("run-1", &store, &clock);
        let a: u32 = run.step("a", &QUICK, || async { Err(PortError::from("must not run")) }).await.unwrap();
        let b: String = run.step("b", &QUICK, || async { Err(PortError::from("must not run")) }).await.unwrap();
        (a, b, run.records().to_vec())
    });
    assert_eq!((again.0, again.1.as_str()), (7, "b7"));
    assert!(again.2.iter().all(|r| !r.ran));
    assert_eq!(calls.get(), 2);
}

/// A checkpoint store whose writes take 5 ms of the clock.
struct SlowSaves<'a>(&'a Sqlite, &'a FakeClock);

impl CheckpointStore for SlowSaves<'_> {
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
        self.0.outputs(run).await
    }

    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String> {
        self.1.sleep(5).await;
        self.0.save(run, checkpoint).await
    }
}

#[test]
fn a_step_s_time_counts_its_checkpoint_s_write() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    let slow = SlowSaves(&store, &clock);
    let records = block_on(async {
        let mut run = Run::new("run-timed", &slow, &clock);
        run.step("merge", &QUICK, || async {
            clock.sleep(10).await;
            Ok(1)
        })
        .await
        .unwrap();
        run.ephemeral("read", &QUICK, || async {
            clock.sleep(3).await;
            Ok(())
        })
        .await
        .unwrap();
        run.records().to_vec()
    });
    let times: Vec<(&str, u64)> = records.iter().map(|r| (r.name.as_str(), r.duration_ms)).collect();
    assert_eq!(times, [("merge", 15), ("read", 3)], "the records add up to the clock's 18 ms");
    let stored: u64 = store.with(|c| c.query_row("SELECT duration_ms FROM workflow_steps WHERE step = 'merge'", [], |r| r.get(0)).unwrap());
    assert_eq!(stored, 10, "the checkpoint holds the time before its own write");
}

#[test]
fn a_crash_between_steps_resumes_at_the_next_step() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    let never = StepConfig { retries: RetryPolicy { limit: 0, ..QUICK.retries }, ..QUICK };
    let crashed = block_on(async {
        let mut run = Run::new("run-2", &store, &clock);
        run.step("list", &never, || async { Ok(vec![1, 2, 3]) }).await.unwrap();
        run.step("merge", &never, || async { Err::<u32, _>(PortError::from("the isolate died")) }).await
    });
    assert!(matches!(crashed, Err(StepError::Failed { ref step, attempts: 1, .. }) if step == "merge"));
    let resumed = block_on(async {
        let mut run = Run::new("run-2", &store, &clock);
        let list: Vec<u32> = run.step("list", &never, || async { Err(PortError::from("listed twice")) }).await.unwrap();
        let sum: u32 = run.step("merge", &never, || async { Ok(list.iter().sum()) }).await.unwrap();
        sum
    });
    assert_eq!(resumed, 6);
}

#[test]
fn failures_are_retried_with_backoff_then_fail_naming_the_step() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    let tries = Cell::new(0);
    let ok: u32 = block_on(Run::new("run-3", &store, &clock).step("flaky", &QUICK, || async {
        tries.set(tries.get() + 1);
        if tries.get() < 3 { Err(PortError::new(format!("try {}", tries.get()))) } else { Ok(42) }
    }))
    .unwrap();
    assert_eq!(ok, 42);
    assert_eq!(*clock.slept.borrow(), vec![100, 200]);
    assert_eq!(attempts(&store, "run-3", "flaky"), Some(3));

    let err = block_on(Run::new("run-4", &store, &clock).step("broken", &QUICK, || async { Err::<u32, _>(PortError::from("D1 is down")) }))
        .unwrap_err();
    assert_eq!(err, StepError::Failed { step: "broken".into(), attempts: 3, message: "D1 is down".into(), timed_out_ms: None });
    assert_eq!(attempts(&store, "run-4", "broken"), None, "a failed step stores nothing");
}

#[test]
fn an_attempt_that_hangs_times_out() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    let config = StepConfig { retries: RetryPolicy { limit: 1, delay_ms: 5, backoff: Backoff::Constant }, timeout_ms: 1000 };
    let err = block_on(Run::new("run-5", &store, &clock).step("hang", &config, std::future::pending::<PortResult<u32>>)).unwrap_err();
    assert_eq!(
        err,
        StepError::Failed { step: "hang".into(), attempts: 2, message: "timed out after 1000 ms".into(), timed_out_ms: Some(1000) }
    );
    assert_eq!(*clock.slept.borrow(), vec![1000, 5, 1000]);
}

#[test]
fn racing_runs_continue_from_the_first_stored_output() {
    let store = Sqlite::migrated();
    let clock = FakeClock::default();
    // Another invocation of the same run completed the step between our check and our save.
    struct Racing<'a>(&'a Sqlite);
    impl CheckpointStore for Racing<'_> {
        async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
            self.0.outputs(run).await
        }
        async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String> {
            self.0.save(run, &Checkpoint { output: "\"theirs\"", ..*checkpoint }).await?;
            self.0.save(run, checkpoint).await
        }
    }
    let racing = Racing(&store);
    let got: String = block_on(Run::new("run-6", &racing, &clock).step("plan", &QUICK, || async { Ok("ours".to_string()) })).unwrap();
    assert_eq!(got, "theirs");
}
