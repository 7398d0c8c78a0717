//! Proof of work over HTTP: reading a request's answer (the join body's `pow` member, or the
//! waiting page's `rg_pow_{room}` cookie) and client address into the domain's
//! [`Work`](crate::queue::pow::Work), the cookie's clearing, and the Web Worker script the
//! waiting page solves challenges in. Whether work is asked, and the verification, are the
//! domain's ([`crate::queue::place::Places::check_work`]); the problems are `http/error.rs`'s.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::Deserialize;

use super::body::{full, Body};
use super::credentials::{cookie, pow_cookie, PeerAddr};
use super::state::AppState;
use crate::id::RoomId;
use crate::queue::pow::{Answer, Work};

/// The Web Worker that solves a challenge with WebCrypto (served at
/// `{prefix}/v1/pow/worker.js`).
const WORKER: &str = include_str!("../../web/pow-worker.js");

/// The `pow` member of a join body: `{"challenge": "...", "nonce": "<decimal>"}`.
#[derive(Debug, Deserialize)]
pub struct PowAnswer {
    /// The challenge text, as issued in the `pow-required` problem.
    pub challenge: String,
    /// The nonce found, in decimal (a JSON string).
    pub nonce: String,
}

impl PowAnswer {
    /// The answer as the domain reads it.
    pub fn as_answer(&self) -> Answer<'_> {
        Answer {
            challenge: &self.challenge,
            nonce: &self.nonce,
        }
    }
}

/// The work a request brings: its client address (the rate limits' rule, honouring trusted
/// proxies) and `answer`.
pub fn work<'a>(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
    answer: Option<Answer<'a>>,
) -> Work<'a> {
    Work {
        client: state.limits.client_address(headers, peer),
        answer,
    }
}

/// The answer the waiting page left in the `rg_pow_{room}` cookie: `{challenge}:{nonce}` (a
/// challenge never contains `:`, a nonce never does either).
pub fn cookie_answer<'a>(headers: &'a HeaderMap, room: &RoomId) -> Option<Answer<'a>> {
    let value = cookie(headers, &pow_cookie(room))?;
    let (challenge, nonce) = value.rsplit_once(':')?;
    Some(Answer { challenge, nonce })
}

/// `Set-Cookie` deleting the room's answer cookie: an answer is sent once, whatever became of
/// it, so a stale one never comes back.
pub fn cleared_cookie(room: &RoomId) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}=; Path=/; Max-Age=0; SameSite=Lax",
        pow_cookie(room)
    ))
    .ok()
}

/// Where the waiting page loads the worker from.
pub fn worker_url(state: &AppState) -> String {
    format!("{}/v1/pow/worker.js", state.config.server.api_prefix)
}

/// `GET {prefix}/v1/pow/worker.js`: the solver script. The same for every room and request, so
/// browsers may keep it a few minutes.
pub fn worker() -> Response<Body> {
    let mut resp = Response::new(full(WORKER));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_answer_splits_at_the_last_colon() {
        let room = RoomId::parse("drop").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rg_pow_drop=drop.8.17.AAAA.BBBB.CCCC:12345"),
        );
        let a = cookie_answer(&h, &room).unwrap();
        assert_eq!(
            (a.challenge, a.nonce),
            ("drop.8.17.AAAA.BBBB.CCCC", "12345")
        );
        let other = RoomId::parse("other").unwrap();
        assert!(cookie_answer(&h, &other).is_none());
        let cleared = cleared_cookie(&room).unwrap();
        assert!(cleared.to_str().unwrap().starts_with("rg_pow_drop=;"));
    }
}
