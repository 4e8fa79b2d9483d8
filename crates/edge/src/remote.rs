//! Every call a Worker makes to something outside itself (D1, R2, the queue, Supabase, another
//! Worker) goes through [`Remote::call`]. Locally each answers at once from the Worker's own
//! process; on Cloudflare each is a network round trip that can be slow or never answer. So a
//! call cannot hang: it gives up after its service's timeout. And a test stack can delay every
//! call (`INJECT_LATENCY_MS`), which shows how many round trips lie on a request's path.

use std::fmt::Display;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{Either, select};
use worker::Delay;

/// What a call goes to; each kind has its own timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    D1,
    R2,
    Queue,
    Supabase,
    /// Another Worker, behind a service binding.
    Worker,
    /// The platform's Rate Limiting binding.
    RateLimit,
    /// The open tables' committer (a Durable Object).
    Committer,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::D1 => "D1",
            Service::R2 => "R2",
            Service::Queue => "the queue",
            Service::Supabase => "Supabase",
            Service::Worker => "the compaction Worker",
            Service::RateLimit => "the rate limiter",
            Service::Committer => "the tables' committer",
        }
    }
}

/// How long calls may take, and the latency a test stack adds to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Supabase (REST and the key set) and service bindings: `REMOTE_TIMEOUT_MS`.
    pub remote_timeout_ms: u64,
    /// D1, R2 and the queue: `BINDING_TIMEOUT_MS` (D1 itself stops a query after 30 s).
    pub binding_timeout_ms: u64,
    /// Added before every call: `INJECT_LATENCY_MS`, test stacks only (0 elsewhere).
    pub injected_latency_ms: u64,
}

impl Default for Remote {
    fn default() -> Self {
        Self { remote_timeout_ms: 5_000, binding_timeout_ms: 30_000, injected_latency_ms: 0 }
    }
}

/// A call that failed or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .timed_out_ms {
    Some(ms) => format!("{} did not answer {} within {ms} ms", .service.name(), .what),
    None => format!("{} failed {}: {}", .service.name(), .what, .message),
})]
pub struct RemoteError {
    pub service: Service,
    /// What was asked, e.g. "the fragment put".
    pub what: String,
    pub message: String,
    pub timed_out_ms: Option<u64>,
}

/// A port's error keeps the timeout, so that it reaches a run's error and its metrics row.
impl From<RemoteError> for fusou_ports::PortError {
    fn from(e: RemoteError) -> Self {
        Self { message: e.to_string(), timed_out_ms: e.timed_out_ms }
    }
}

impl From<RemoteError> for worker::Error {
    fn from(e: RemoteError) -> Self {
        worker::Error::RustError(e.to_string())
    }
}

impl RemoteError {
    /// A call that answered with an error.
    pub fn failed(service: Service, what: &str, error: impl Display) -> Self {
        Self { service, what: what.to_owned(), message: error.to_string(), timed_out_ms: None }
    }
}

impl Remote {
    pub fn timeout_ms(&self, service: Service) -> u64 {
        match service {
            Service::Supabase | Service::Worker | Service::RateLimit | Service::Committer => self.remote_timeout_ms,
            Service::D1 | Service::R2 | Service::Queue => self.binding_timeout_ms,
        }
    }

    /// Awaits `call` to `service`, after the injected latency, for at most its timeout.
    pub async fn call<T, E: Display>(
        &self,
        service: Service,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, RemoteError> {
        self.call_within(service, what, self.timeout_ms(service), call).await
    }

    /// [`Remote::call`] with a timeout of its own (a long operator request, say).
    pub async fn call_within<T, E: Display>(
        &self,
        service: Service,
        what: &str,
        timeout_ms: u64,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, RemoteError> {
        if self.injected_latency_ms > 0 {
            Delay::from(Duration::from_millis(self.injected_latency_ms)).await;
        }
        let error = |message: String, timed_out_ms| RemoteError { service, what: what.to_owned(), message, timed_out_ms };
        match select(pin!(call), pin!(Delay::from(Duration::from_millis(timeout_ms)))).await {
            Either::Left((Ok(value), _)) => Ok(value),
            Either::Left((Err(e), _)) => Err(error(e.to_string(), None)),
            Either::Right(_) => Err(error(String::new(), Some(timeout_ms))),
        }
    }
}
