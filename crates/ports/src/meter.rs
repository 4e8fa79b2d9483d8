//! Billable operations, counted where they are made: a [`Metered`] port wraps any [`Sql`] or
//! [`Blobs`] and counts what passes through it into a [`Meter`], by the classes Cloudflare bills
//! (R2 class A and B, D1 rows, queue operations). The Workers wrap their ports with it for each
//! invocation and report the counts; the cost benchmark wraps the native ports the same way.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Blobs, Checkpoint, CheckpointStore, PortResult, Sql, SqlValue, Statement};

/// What one invocation (or one part of the pipeline) made, by billing class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operations {
    /// R2 class A: puts, multipart creates, parts and completes, lists.
    pub r2_class_a: u64,
    /// R2 class B: gets and heads.
    pub r2_class_b: u64,
    /// D1 queries and statements (each statement of a batch counts).
    pub d1_statements: u64,
    /// D1 rows read, as D1 reports them (0 where the port cannot tell: the native ports).
    pub d1_rows_read: u64,
    /// D1 rows written: the rows statements changed (D1 also bills each index a write
    /// touches, so the Worker's own figure, from D1's answer, is the one to bill by).
    pub d1_rows_written: u64,
    /// Queue operations: a message is written, read and deleted (3 per 64 KB).
    pub queue_operations: u64,
    /// Calls that leave the invocation (R2, D1, queue, services, Durable Objects).
    pub subrequests: u64,
}

impl Operations {
    /// Both counts together.
    pub fn plus(self, other: Operations) -> Operations {
        self.each(other, |a, b| a + b)
    }

    /// What was counted since `earlier` (a count taken before).
    pub fn since(self, earlier: Operations) -> Operations {
        self.each(earlier, |a, b| a - b)
    }

    /// `f` of each count of `self` and the same count of `other`.
    fn each(self, other: Operations, f: impl Fn(u64, u64) -> u64) -> Operations {
        Operations {
            r2_class_a: f(self.r2_class_a, other.r2_class_a),
            r2_class_b: f(self.r2_class_b, other.r2_class_b),
            d1_statements: f(self.d1_statements, other.d1_statements),
            d1_rows_read: f(self.d1_rows_read, other.d1_rows_read),
            d1_rows_written: f(self.d1_rows_written, other.d1_rows_written),
            queue_operations: f(self.queue_operations, other.queue_operations),
            subrequests: f(self.subrequests, other.subrequests),
        }
    }

    /// What these operations cost, in US dollars, at `prices`.
    pub fn dollars(&self, prices: &Prices) -> f64 {
        let per_million = |n: u64, price: f64| n as f64 / 1e6 * price;
        per_million(self.r2_class_a, prices.r2_class_a)
            + per_million(self.r2_class_b, prices.r2_class_b)
            + per_million(self.d1_rows_read, prices.d1_rows_read)
            + per_million(self.d1_rows_written, prices.d1_rows_written)
            + per_million(self.queue_operations, prices.queue_operations)
    }
}

/// Cloudflare's published prices per million beyond the Workers Paid plan's included usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Per million R2 class A operations.
    pub r2_class_a: f64,
    /// Per million R2 class B operations.
    pub r2_class_b: f64,
    /// Per million D1 rows read.
    pub d1_rows_read: f64,
    /// Per million D1 rows written.
    pub d1_rows_written: f64,
    /// Per million queue operations.
    pub queue_operations: f64,
}

impl Prices {
    /// As published on developers.cloudflare.com (R2, D1 and Queues pricing pages), read on
    /// 2026-12-06: R2 Standard class A $4.50 and class B $0.36 per million requests; D1 $0.001
    /// per million rows read and $1.00 per million rows written; Queues $0.40 per million
    /// operations.
    pub const PUBLISHED_2026_12_06: Prices =
        Prices { r2_class_a: 4.50, r2_class_b: 0.36, d1_rows_read: 0.001, d1_rows_written: 1.00, queue_operations: 0.40 };
}

/// Counts, for one invocation or one part of it (single-threaded: a Worker's isolate runs one
/// task at a time, though tasks may take turns).
#[derive(Debug, Default)]
pub struct Meter {
    ops: Cell<Operations>,
    /// The meter this one's counts are also counted into.
    within: Option<Rc<Meter>>,
}

impl Meter {
    /// A meter for a part of what `outer` counts (one run of a batch whose runs take turns):
    /// what it counts, `outer` counts too.
    pub fn within(outer: Rc<Meter>) -> Self {
        Meter { ops: Cell::default(), within: Some(outer) }
    }

    /// Adds `f`'s changes to the counts.
    pub fn add(&self, f: impl FnOnce(&mut Operations)) {
        let mut ops = self.ops.get();
        f(&mut ops);
        self.count(ops.since(self.ops.get()));
    }

    fn count(&self, added: Operations) {
        self.ops.set(self.ops.get().plus(added));
        if let Some(outer) = &self.within {
            outer.count(added);
        }
    }

    /// The counts so far.
    pub fn operations(&self) -> Operations {
        self.ops.get()
    }
}

/// A port whose calls are counted into a meter.
pub struct Metered<'a, P> {
    /// The port that does the work.
    pub inner: &'a P,
    /// Where its calls are counted.
    pub meter: &'a Meter,
}

impl<'a, P> Metered<'a, P> {
    /// `inner`, counted into `meter`.
    pub fn new(inner: &'a P, meter: &'a Meter) -> Self {
        Metered { inner, meter }
    }
}

impl<P: Sql> Sql for Metered<'_, P> {
    async fn query<T: serde::de::DeserializeOwned>(&self, sql: &str, params: &[SqlValue]) -> PortResult<Vec<T>> {
        self.meter.add(statement);
        self.inner.query(sql, params).await
    }

    async fn run(&self, sql: &str, params: &[SqlValue]) -> PortResult<u64> {
        self.meter.add(statement);
        let changed = self.inner.run(sql, params).await?;
        self.meter.add(|o| o.d1_rows_written += changed);
        Ok(changed)
    }

    async fn batch(&self, statements: &[Statement]) -> PortResult<Vec<u64>> {
        let n = statements.len() as u64;
        self.meter.add(|o| (o.d1_statements, o.subrequests) = (o.d1_statements + n, o.subrequests + (n > 0) as u64));
        let changed = self.inner.batch(statements).await?;
        self.meter.add(|o| o.d1_rows_written += changed.iter().sum::<u64>());
        Ok(changed)
    }
}

/// Checkpoints live in D1 in the Worker: one statement each way.
impl<P: CheckpointStore> CheckpointStore for Metered<'_, P> {
    async fn outputs(&self, run: &str) -> PortResult<Vec<(String, String)>> {
        self.meter.add(statement);
        self.inner.outputs(run).await
    }

    async fn save(&self, run: &str, checkpoint: &Checkpoint<'_>) -> PortResult<String> {
        self.meter.add(|o| {
            statement(o);
            o.d1_rows_written += 1;
        });
        self.inner.save(run, checkpoint).await
    }
}

impl<P: Blobs> Blobs for Metered<'_, P> {
    async fn get(&self, key: &str) -> PortResult<Option<Bytes>> {
        self.meter.add(|o| (o.r2_class_b, o.subrequests) = (o.r2_class_b + 1, o.subrequests + 1));
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, bytes: Bytes) -> PortResult<()> {
        self.meter.add(class_a);
        self.inner.put(key, bytes).await
    }

    async fn create_multipart(&self, key: &str) -> PortResult<String> {
        self.meter.add(class_a);
        self.inner.create_multipart(key).await
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: Bytes) -> PortResult<String> {
        self.meter.add(class_a);
        self.inner.upload_part(key, upload_id, number, bytes).await
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: Vec<(u16, String)>) -> PortResult<()> {
        self.meter.add(class_a);
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    /// Free, as deletes are; still a subrequest.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> PortResult<()> {
        self.meter.add(|o| o.subrequests += 1);
        self.inner.abort_multipart(key, upload_id).await
    }

    /// Free (R2 bills no deletes); one subrequest per call.
    async fn delete(&self, keys: &[String]) -> PortResult<()> {
        self.meter.add(|o| o.subrequests += 1);
        self.inner.delete(keys).await
    }
}

/// One D1 statement, sent on its own.
fn statement(o: &mut Operations) {
    o.d1_statements += 1;
    o.subrequests += 1;
}

fn class_a(o: &mut Operations) {
    o.r2_class_a += 1;
    o.subrequests += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_follow_the_published_prices() {
        let ops = Operations {
            r2_class_a: 2_000_000,
            r2_class_b: 1_000_000,
            d1_rows_written: 1_000_000,
            queue_operations: 3_000_000,
            ..Default::default()
        };
        let dollars = ops.dollars(&Prices::PUBLISHED_2026_12_06);
        assert!((dollars - (9.0 + 0.36 + 1.0 + 1.2)).abs() < 1e-9, "{dollars}");
    }

    #[test]
    fn a_runs_meter_counts_its_own_calls_and_its_invocations_too() {
        let invocation = Rc::new(Meter::default());
        let (a, b) = (Meter::within(invocation.clone()), Meter::within(invocation.clone()));
        a.add(|o| o.r2_class_a += 2);
        b.add(|o| o.r2_class_b += 1);
        a.add(|o| o.d1_rows_written += 5);
        assert_eq!(a.operations(), Operations { r2_class_a: 2, d1_rows_written: 5, ..Default::default() });
        assert_eq!(b.operations(), Operations { r2_class_b: 1, ..Default::default() });
        assert_eq!(invocation.operations(), a.operations().plus(b.operations()));
    }
}
