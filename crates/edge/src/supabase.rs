//! Executes `fusou_core::supabase::RestCall`s against Supabase's REST API with the service key,
//! each within the remote timeout: a Supabase that hangs costs a caller that long, no longer.

use fusou_core::supabase::RestCall;
use worker::{AbortController, Fetch, Headers, Method, Request, RequestInit, wasm_bindgen::JsValue};

use crate::remote::{Remote, RemoteError, Service};

/// A Supabase project, reached with its service key.
#[derive(Clone)]
pub struct Supabase {
    pub url: String,
    service_key: String,
    remote: Remote,
}

/// A failed call: a transport error or a timeout, or PostgREST's answer.
#[derive(Debug)]
pub struct SupabaseError {
    pub status: Option<u16>,
    pub message: String,
    /// The limit a call did not answer within, when that is how it failed.
    pub timed_out_ms: Option<u64>,
}

impl std::fmt::Display for SupabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "Supabase answered {s}: {}", self.message),
            None => write!(f, "Supabase unreachable: {}", self.message),
        }
    }
}

impl From<RemoteError> for SupabaseError {
    fn from(e: RemoteError) -> Self {
        Self { status: None, message: e.to_string(), timed_out_ms: e.timed_out_ms }
    }
}

impl From<SupabaseError> for fusou_ports::PortError {
    fn from(e: SupabaseError) -> Self {
        Self { message: e.to_string(), timed_out_ms: e.timed_out_ms }
    }
}

impl Supabase {
    pub fn new(url: String, service_key: String, remote: Remote) -> Self {
        Self { url, service_key, remote }
    }

    /// Runs `call`; a non-2xx answer is an error carrying PostgREST's body. A call that does not
    /// answer within the remote timeout is aborted.
    pub async fn execute(&self, call: &RestCall) -> Result<String, SupabaseError> {
        let transport = |e: worker::Error| SupabaseError { status: None, message: e.to_string(), timed_out_ms: None };
        let headers = Headers::new();
        headers.set("apikey", &self.service_key).map_err(transport)?;
        headers.set("authorization", &format!("Bearer {}", self.service_key)).map_err(transport)?;
        headers.set("accept", "application/json").map_err(transport)?;
        if let Some(prefer) = call.prefer {
            headers.set("prefer", prefer).map_err(transport)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(call.method.to_string())).with_headers(headers);
        if let Some(body) = &call.body {
            init.headers.set("content-type", "application/json").map_err(transport)?;
            init.with_body(Some(JsValue::from_str(body)));
        }
        let request = Request::new_with_init(&call.url(&self.url), &init).map_err(transport)?;
        let abort = AbortController::default();
        let signal = abort.signal();
        let answer = self
            .remote
            .call(Service::Supabase, call.what(), async {
                let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
                let status = response.status_code();
                Ok::<_, worker::Error>((status, response.text().await?))
            })
            .await;
        let (status, text) = answer.inspect_err(|e| {
            if e.timed_out_ms.is_some() {
                abort.abort();
            }
        })?;
        if (200..300).contains(&status) { Ok(text) } else { Err(SupabaseError { status: Some(status), message: text, timed_out_ms: None }) }
    }
}
