//! Who a request says it is: the cookies and `Authorization: Bearer` token it presents, the
//! names of rushgate's cookies (`rg_ticket_{room}`, `rg_pass_{room}`, `rg_pow_{room}`, built
//! only here), and the TCP peer it came from. Reading a ticket or pass from a request happens
//! here once.

use std::fmt;

use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::id::RoomId;

/// The TCP peer of a request, in its extensions (rate limits key on it; the proxy appends it
/// to `X-Forwarded-For`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// When a request's body must have arrived (its head's arrival plus
/// `server.body_timeout_seconds`), in its extensions; [`crate::http::json::read_limited`] gives
/// up then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// Prefix of the ticket cookie names.
const TICKET_COOKIE: &str = "rg_ticket_";
/// Prefix of the pass cookie names.
const PASS_COOKIE: &str = "rg_pass_";
/// Prefix of the proof-of-work answer cookie names.
const POW_COOKIE: &str = "rg_pow_";

/// Name of the cookie that holds a shopper's ticket (place in line) for `room`.
pub fn ticket_cookie(room: impl fmt::Display) -> String {
    format!("{TICKET_COOKIE}{room}")
}

/// Name of the cookie that holds a shopper's admission pass for `room`.
pub fn pass_cookie(room: impl fmt::Display) -> String {
    format!("{PASS_COOKIE}{room}")
}

/// Name of the cookie in which the waiting page hands its proof-of-work answer for `room`
/// (`{challenge}:{nonce}`) to the next load of the page.
pub fn pow_cookie(room: impl fmt::Display) -> String {
    format!("{POW_COOKIE}{room}")
}

/// Whether a cookie is one of rushgate's own (ticket, pass or proof-of-work answer of any
/// room): the proxy keeps them from the shop.
pub fn is_rushgate_cookie(name: &str) -> bool {
    name.starts_with(TICKET_COOKIE) || name.starts_with(PASS_COOKIE) || name.starts_with(POW_COOKIE)
}

/// The pass a request presents for `room`: the bearer token, else the pass cookie.
pub fn presented_pass<'a>(headers: &'a HeaderMap, room: &str) -> Option<&'a str> {
    bearer(headers).or_else(|| cookie(headers, &pass_cookie(room)))
}

/// The ticket a request presents for `room`: the bearer token, else the ticket cookie.
pub fn presented_ticket<'a>(headers: &'a HeaderMap, room: &RoomId) -> Option<&'a str> {
    bearer(headers).or_else(|| cookie(headers, &ticket_cookie(room)))
}

/// The pass cookie a request presents for `room`.
pub fn pass_from_cookie<'a>(headers: &'a HeaderMap, room: &RoomId) -> Option<&'a str> {
    cookie(headers, &pass_cookie(room))
}

/// The value of cookie `name` from every `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether `Authorization: Bearer` carries exactly `expected`, compared in constant time (shop
/// and admin keys: the comparison must not leak how much of a guess was right).
pub fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    bearer(headers).is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())))
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn finds_cookies_across_headers_and_bearer_tokens() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rg_ticket_drop=abc.def"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(cookie(&h, "rg_ticket_drop"), Some("abc.def"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "rg_ticket"), None);
        assert_eq!(bearer(&h), Some("tok"));
    }
}
