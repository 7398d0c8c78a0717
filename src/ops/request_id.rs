//! Request ids: every request gets one (the caller's `X-Request-Id` when it is a sane token,
//! else a fresh UUID v7), echoed in the `X-Request-Id` response header, in every problem body
//! and in the request's log line.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header a request id travels in, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming id that is honoured.
const MAX_LEN: usize = 128;

/// A request id. Always 1–128 characters of `A-Z a-z 0-9 - _ . : + / = @`, so it is safe in a
/// header, a JSON string and a log line. Held as the header value it is sent as: made once per
/// request, and cloning it (into the request's extensions, the response header) shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The caller's `X-Request-Id` when it is acceptable, otherwise a new UUID v7 (time-ordered,
    /// so ids sort by arrival in logs).
    pub fn from_headers(headers: &HeaderMap) -> RequestId {
        headers
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate)
    }

    /// A fresh UUID v7.
    pub fn generate() -> RequestId {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
        RequestId(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")))
    }

    /// `Some` when `raw` is an acceptable id (see [`RequestId`]).
    pub fn parse(raw: &str) -> Option<RequestId> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b));
        if !ok {
            return None;
        }
        HeaderValue::from_str(raw).ok().map(RequestId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // The character set is a subset of visible ASCII, so this never falls back.
        self.0.to_str().unwrap_or("-")
    }

    /// The id as a header value (a clone shares the bytes).
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_a_sane_incoming_id() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("lb-1234.abc:def"));
        assert_eq!(RequestId::from_headers(&h).as_str(), "lb-1234.abc:def");
    }

    #[test]
    fn replaces_unsafe_or_missing_ids() {
        for bad in ["", "has space", "quote\"", "a\u{7f}", &"x".repeat(129)] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?} accepted");
        }
        let fresh = RequestId::from_headers(&HeaderMap::new());
        assert_eq!(fresh.as_str().len(), 36);
        assert!(uuid::Uuid::parse_str(fresh.as_str()).is_ok());
        assert_eq!(fresh.header_value().to_str().ok(), Some(fresh.as_str()));
    }
}
