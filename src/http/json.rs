//! JSON in and out: request bodies read under a size bound and parsed with every failure a
//! clear 4xx ([`ApiError`]), and JSON responses that are never cached.

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::body::{full, Body};
use super::credentials::BodyDeadline;
use super::error::ApiError;

/// Largest request body any API endpoint accepts.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON response with `status`.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(format!("serializing response: {e}")).into_response(),
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// How long a body may take when the request carries no [`BodyDeadline`] (built in-process).
const DEFAULT_BODY_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads at most [`MAX_BODY_BYTES`]; a declared or actual larger body is `BodyTooLarge`, one
/// that is not complete by the request's [`BodyDeadline`] is `BodyTimeout`.
pub async fn read_limited<B>(parts: &Parts, body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let headers = &parts.headers;
    let deadline = parts
        .extensions
        .get::<BodyDeadline>()
        .map_or_else(|| tokio::time::Instant::now() + DEFAULT_BODY_TIME, |d| d.0);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge {
            limit: MAX_BODY_BYTES,
        }),
        Err(_) => Err(ApiError::BodyRead),
    }
}

/// Parses an optional JSON body: empty (or whitespace) means `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

/// Parses a required JSON body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}
