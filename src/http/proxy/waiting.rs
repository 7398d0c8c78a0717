//! A shopper without a valid pass: joins automatically (the same `enter` as the join endpoint,
//! with the ticket cookie) and gets the waiting page, the JSON place body for
//! `Accept: application/json`, or, when admitted at once, a redirect back to the page asked for.
//!
//! When the room asks for a proof of work before a new place, the page comes in its `pow`
//! state: its script solves the challenge in a Web Worker, leaves the answer in the
//! `rg_pow_{room}` cookie and loads the page again, and that request joins with it (so the
//! join is this same auto-join, with the identity cookie and the return URL). A JSON client
//! gets the `401 pow-required` problem instead.

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::page::{PageView, PowView};
use crate::clock::now_ms;
use crate::http::body::{full, Body};
use crate::http::credentials::PeerAddr;
use crate::http::credentials::{cookie, pass_from_cookie, pow_cookie, ticket_cookie};
use crate::http::error::ApiError;
use crate::http::limits::Endpoint;
use crate::http::place::{group_shopper, language, place_cookies, respond, with_pending_cookie};
use crate::http::pow;
use crate::http::state::AppState;
use crate::queue::place::{identify, place_body, PlaceError, PlaceState, Presented, Shopper};
use crate::queue::pow::Challenge;
use crate::queue::Room;

/// Longest return URL carried through the waiting page.
const MAX_RETURN_URL: usize = 2048;

/// Auto-joins `room_id` and answers with the waiting page (200), the JSON place body, or a
/// `303 See Other` to `return_to` with the pass cookie once admitted. Never forwards anything
/// to the shop. Rate-limited like the API: as a poll for a shopper with a ticket cookie, as a
/// join (per client address) without one.
pub(crate) async fn admit_or_wait(
    state: &AppState,
    room_id: &str,
    headers: &HeaderMap,
    peer: Option<PeerAddr>,
    return_to: &str,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let ticket = cookie(headers, &ticket_cookie(&room.id));
    let endpoint = if ticket.is_some() {
        Endpoint::Poll
    } else {
        Endpoint::Join
    };
    state.limits.check(endpoint, headers, peer, ticket)?;
    let now = now_ms();
    // The page's own ticket cookie only: a stale one is replaced by a new place.
    let presented = ticket.map(|token| Presented {
        token,
        strict: false,
    });
    let pass = pass_from_cookie(headers, &room.id);
    let shopper = match vouched_shopper(state, headers, ticket, now).await {
        None if ticket.is_none() => group_shopper(state, room, headers, now),
        shopper => shopper,
    };
    let answer = pow::cookie_answer(headers, &room.id);
    let work = pow::work(state, headers, peer, answer);
    let places = state.places();
    let entered = match places
        .enter(room, presented, pass, shopper, work, now)
        .await
    {
        Ok(entered) => entered,
        Err(PlaceError::WorkNeeded(challenge)) if !wants_json(headers) => {
            return Ok(pow_page(state, room, headers, &challenge, return_to, now));
        }
        Err(PlaceError::WorkRefused(e)) if !wants_json(headers) => {
            // A stale or replayed answer cookie (an old tab, say): the page starts over.
            tracing::debug!(error = %e, room = %room.id, "proof of work refused; new challenge");
            let challenge = places.fresh_challenge(room, work.client, now);
            return Ok(pow_page(state, room, headers, &challenge, return_to, now));
        }
        Err(e) => return Err(with_pending_cookie(state, room, headers, e.into())),
    };
    let place = entered.place;
    if wants_json(headers) {
        let status = if entered.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut resp = respond(state, room, headers, status, place, now);
        clear_answer(&mut resp, headers, room);
        return Ok(resp);
    }
    let cookies = place_cookies(state, room, headers, &place, now);
    let mut resp = if place.state == PlaceState::Admitted {
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SEE_OTHER;
        let location = HeaderValue::from_str(return_to).unwrap_or(HeaderValue::from_static("/"));
        resp.headers_mut().insert(header::LOCATION, location);
        resp
    } else {
        let first_position = place
            .ticket
            .as_deref()
            .and_then(|t| state.tickets.verify(t).ok())
            .map_or(place.position, |c| c.pos);
        let lang = language(room, headers);
        let body = place_body(room, &place, now, lang);
        let position_url = format!(
            "{}/v1/rooms/{}/position",
            state.config.server.api_prefix, room.id
        );
        let state_name = body.state.as_str();
        let html = state.proxy.page(room_id).render(&PageView {
            room: room.id.as_str(),
            state: state_name,
            position: body.position,
            first_position,
            eta: (body.eta_seconds.p50, body.eta_seconds.p90),
            remaining: body.remaining,
            message: &body.message,
            lang,
            poll_after_ms: body.poll_after_ms,
            return_url: return_to,
            position_url: &position_url,
            opens_in_ms: body.opens_in_ms,
            pow: None,
        });
        html_page(html)
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page differs by cookie; shared caches must never hand one shopper's page to another.
    h.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Accept, Accept-Language"),
    );
    for cookie in cookies {
        h.append(header::SET_COOKIE, cookie);
    }
    clear_answer(&mut resp, headers, room);
    Ok(resp)
}

/// The waiting page in its `pow` state: nothing changed yet; its script solves `challenge`
/// and comes back to `return_to` with the answer.
fn pow_page(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    challenge: &Challenge,
    return_to: &str,
    now: u64,
) -> Response<Body> {
    let position_url = format!(
        "{}/v1/rooms/{}/position",
        state.config.server.api_prefix, room.id
    );
    let worker_url = pow::worker_url(state);
    let cookie = pow_cookie(&room.id);
    let lang = language(room, headers);
    let message = room.message_for(lang);
    let html = state.proxy.page(room.id.as_str()).render(&PageView {
        room: room.id.as_str(),
        state: "pow",
        position: 0,
        first_position: 0,
        eta: (None, None),
        remaining: room.stock_gate().map(|g| g.remaining),
        message: &message,
        lang,
        poll_after_ms: 0,
        return_url: return_to,
        position_url: &position_url,
        opens_in_ms: None,
        pow: Some(PowView {
            challenge: &challenge.text,
            difficulty: challenge.difficulty,
            expires_in_ms: challenge.expires_ms.saturating_sub(now),
            worker_url: &worker_url,
            cookie: &cookie,
        }),
    });
    let mut resp = html_page(html);
    clear_answer(&mut resp, headers, room);
    resp
}

/// An HTML page that no cache keeps or shares (it differs by cookie).
fn html_page(html: String) -> Response<Body> {
    let mut resp = Response::new(full(html));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::VARY,
        HeaderValue::from_static("Cookie, Accept, Accept-Language"),
    );
    resp
}

/// Deletes the proof-of-work answer cookie when the request carried one: it has been used.
fn clear_answer(resp: &mut Response<Body>, headers: &HeaderMap, room: &Room) {
    if pow::cookie_answer(headers, &room.id).is_some() {
        if let Some(cleared) = pow::cleared_cookie(&room.id) {
            resp.headers_mut().append(header::SET_COOKIE, cleared);
        }
    }
}

/// The shopper the shop's identity cookie (`identity.cookie`) vouches for, when the page's
/// own ticket does not already name a vouched shopper: a browser that is logged in at the shop
/// joins as itself. An invalid or expired cookie counts as not logged in.
async fn vouched_shopper(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
    now: u64,
) -> Option<Shopper> {
    let name = state.config.identity.cookie.as_deref()?;
    let token = cookie(headers, name)?;
    if ticket
        .and_then(|t| state.tickets.verify(t).ok())
        .is_some_and(|c| c.uid.is_some())
    {
        return None;
    }
    match identify(
        state.user_tokens.as_ref(),
        &state.tickets,
        None,
        Some(token),
        now / 1000,
    )
    .await
    {
        Ok(shopper) => shopper,
        Err(e) => {
            tracing::debug!(error = %e, "identity cookie refused; joining as an anonymous shopper");
            None
        }
    }
}

/// `ANY {prefix}/v1/rooms/{room}/wait`: the waiting page for shops that keep their own proxy
/// (nginx `error_page 401 = @queue`). The page to return to comes from `X-Original-URI` (set by
/// the proxy) or the `return` query parameter, and must be a path on this site.
pub async fn wait(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let from_header = req
        .headers()
        .get("x-original-uri")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_query =
        super::rules::query_param(req.uri(), "return").map(super::rules::percent_decode);
    let return_to = from_header
        .or(from_query)
        .filter(|u| is_local_path(u))
        .unwrap_or_else(|| "/".to_string());
    let peer = req.extensions().get::<PeerAddr>().copied();
    admit_or_wait(state, room_id, req.headers(), peer, &return_to).await
}

/// Whether the client asked for JSON rather than a page.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("application/json") && !v.contains("text/html")
        })
}

/// A same-site path: starts with one `/` (not `//` or `/\`, which browsers read as another
/// host), printable ASCII only, bounded length. Keeps the waiting page from being an open
/// redirect.
pub(crate) fn is_local_path(url: &str) -> bool {
    url.len() <= MAX_RETURN_URL
        && url.starts_with('/')
        && !url.starts_with("//")
        && !url.starts_with("/\\")
        && url.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_stay_on_the_site() {
        assert!(is_local_path("/products/drop?size=9"));
        assert!(!is_local_path("//evil.example/"));
        assert!(!is_local_path("/\\evil.example"));
        assert!(!is_local_path("https://evil.example/"));
        assert!(!is_local_path("/a b"));
        assert_eq!(
            super::super::rules::percent_decode("%2Fproducts%2Fdrop%3Fa%3D1"),
            "/products/drop?a=1"
        );
    }

    #[test]
    fn json_only_when_asked_for_without_html() {
        let mut h = HeaderMap::new();
        assert!(!wants_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/json;q=0.9"),
        );
        assert!(!wants_json(&h));
    }
}
