//! Executes `fusou_core::supabase::RestCall`s against Supabase's REST API with the service key.

use fusou_core::supabase::RestCall;
use worker::{Fetch, Headers, Method, Request, RequestInit, wasm_bindgen::JsValue};

/// A Supabase project, reached with its service key.
#[derive(Clone)]
pub struct Supabase {
    pub url: String,
    service_key: String,
}

/// A failed call: a transport error, or PostgREST's answer.
#[derive(Debug)]
pub struct SupabaseError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for SupabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "Supabase answered {s}: {}", self.message),
            None => write!(f, "Supabase unreachable: {}", self.message),
        }
    }
}

impl Supabase {
    pub fn new(url: String, service_key: String) -> Self {
        Self { url, service_key }
    }

    /// Runs `call`; a non-2xx answer is an error carrying PostgREST's body.
    pub async fn execute(&self, call: &RestCall) -> Result<String, SupabaseError> {
        let transport = |e: worker::Error| SupabaseError { status: None, message: e.to_string() };
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
        let mut response = Fetch::Request(request).send().await.map_err(transport)?;
        let status = response.status_code();
        let text = response.text().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(SupabaseError { status: Some(status), message: text })
        }
    }
}
