//! The platform's WebCrypto, where it does the upload's work faster than the same code in Wasm
//! (`scripts/bench-upload.sh`, "the upload's crypto": SHA-256 is 3 to 5 times faster there,
//! copying the body out of Wasm memory included).

use fusou_core::upload::ContentHash;
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::WorkerGlobalScope;

use crate::http::ApiError;

/// The SHA-256 of `bytes`, by `crypto.subtle.digest`.
pub async fn sha256(bytes: &[u8]) -> Result<ContentHash, ApiError> {
    let failed = |e: worker::wasm_bindgen::JsValue| ApiError::new(500, format!("WebCrypto digest failed: {e:?}"));
    let scope: WorkerGlobalScope = js_sys::global().unchecked_into();
    let subtle = scope.crypto().map_err(failed)?.subtle();
    let promise = subtle.digest_with_str_and_buffer_source("SHA-256", &Uint8Array::from(bytes)).map_err(failed)?;
    let digest = JsFuture::from(promise).await.map_err(failed)?;
    Ok(ContentHash::from_digest(&Uint8Array::new(&digest).to_vec())?)
}
