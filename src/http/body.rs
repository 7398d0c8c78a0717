//! The response body type of every handler (full or streamed) and the helper for complete
//! bodies. Knows nothing of errors or JSON, so every other part of `http/` can build on it.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Error type of response bodies (streaming bodies may fail mid-way).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}
