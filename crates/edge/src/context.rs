//! What both Workers hold for an invocation, read from `Env` in one place: the settings both
//! read ([`Shared`]), the remote-call policy, the Supabase client, and every binding. Each
//! Worker's own context adds its settings on top (and derefs to this one).

use std::rc::Rc;

use fusou_core::config::{ConfigError, OperatorRefusal, Shared, Vars};
use fusou_ports::meter::Meter;
use worker::{Bucket, Env, Fetcher, Queue, RateLimiter, Request};

use crate::bindings;
use crate::d1::Db;
use crate::remote::Remote;
use crate::supabase::Supabase;

/// The shared part of a Worker's context.
pub struct WorkerEnv {
    env: Env,
    /// The settings both Workers read.
    pub shared: Shared,
    /// How long each remote call may take.
    pub remote: Remote,
    /// The Supabase project's REST API.
    pub supabase: Supabase,
    /// The invocation's billable operations so far (D1 counts its own; R2 and queue calls are
    /// counted where they are made).
    pub meter: Rc<Meter>,
}

impl WorkerEnv {
    /// Reads the shared settings, then hands the Worker's own reader `own` the same variables.
    pub fn load<T, E: From<ConfigError>>(env: Env, own: impl FnOnce(&Vars<'_>) -> Result<T, E>) -> Result<(Self, T), E> {
        let get = |name: &str| crate::var(&env, name);
        let vars = Vars::new(&get);
        let shared = Shared::from_vars(&vars)?;
        let settings = own(&vars)?;
        let remote = crate::remote(&shared.platform);
        let supabase = Supabase::new(shared.supabase_url.clone(), shared.supabase_service_key.clone(), remote);
        Ok((Self { env, shared, remote, supabase, meter: Rc::default() }, settings))
    }

    /// Passes a request that bears the operator secret ([`Shared::check_operator`]).
    pub fn check_operator(&self, req: &Request) -> Result<(), OperatorRefusal> {
        let header = req.headers().get("authorization").ok().flatten();
        self.shared.check_operator(header.as_deref())
    }

    /// Passes a reader of the open tables: the operator, or a bearer of `lake_read_secret`
    /// ([`Shared::check_lake_reader`]).
    pub fn check_lake_reader(&self, req: &Request, lake_read_secret: Option<&str>) -> Result<(), OperatorRefusal> {
        let header = req.headers().get("authorization").ok().flatten();
        self.shared.check_lake_reader(header.as_deref(), lake_read_secret)
    }

    /// The battle-data index (D1), every call behind the remote policy.
    pub fn db(&self) -> worker::Result<Db> {
        self.db_counted_in(self.meter.clone())
    }

    /// The battle-data index, its calls counted into `meter` (a part of the invocation's).
    pub fn db_counted_in(&self, meter: Rc<Meter>) -> worker::Result<Db> {
        Ok(Db::new(self.env.d1(bindings::BATTLE_INDEX_DB)?, self.remote, meter))
    }

    /// The battle-data bucket (R2).
    pub fn bucket(&self) -> worker::Result<Bucket> {
        self.env.bucket(bindings::BATTLE_DATA_BUCKET)
    }

    /// The compaction queue.
    pub fn queue(&self) -> worker::Result<Queue> {
        self.env.queue(bindings::COMPACTION_QUEUE)
    }

    /// The compaction Worker, through the upload Worker's service binding.
    pub fn compaction_service(&self) -> worker::Result<Fetcher> {
        self.env.service(bindings::COMPACTION_SERVICE)
    }

    /// The open tables' committer (the compaction Worker's Durable Object).
    pub fn lake_committer(&self) -> worker::Result<worker::ObjectNamespace> {
        self.env.durable_object(bindings::LAKE_COMMITTER)
    }

    /// A rate limiter binding of the upload Worker.
    pub fn rate_limiter(&self, binding: &str) -> worker::Result<RateLimiter> {
        self.env.rate_limiter(binding)
    }
}
