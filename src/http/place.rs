//! Rendering a place (decided by [`crate::queue::place`]): the JSON place body and the
//! `Set-Cookie` values of its ticket and pass. Shared by the queue endpoints and the proxy's
//! waiting page, so both answer a place the same way.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::body::Body;
use super::credentials::{bearer, cookie, pass_cookie, ticket_cookie};
use super::error::{ApiError, Retry};
use super::json::json;
use super::state::AppState;
use crate::config::SecureCookies;
use crate::queue::place::{place_body, Place, Shopper, PENDING_TICKET_SECS, TICKET_MAX_AGE_SECS};
use crate::queue::Room;

/// The JSON place body (join / position contract) with the place's cookies.
pub fn respond(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    status: StatusCode,
    place: Place,
    now: u64,
) -> Response<Body> {
    let lang = language(room, headers);
    let mut resp = json(status, &place_body(room, &place, now, lang));
    for cookie in place_cookies(state, room, headers, &place, now) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

/// An anonymous browser's identity in a group of rooms: the identity of a valid ticket it
/// holds (its cookie) in another room of `room`'s group, so one browser is one shopper across
/// the group ([`crate::queue::group`]). `None` outside a group or without such a ticket.
pub fn group_shopper(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    now: u64,
) -> Option<Shopper> {
    let group = state.groups.of(room.id.as_str())?;
    group
        .rooms
        .iter()
        .filter(|other| other.as_str() != room.id.as_str())
        .find_map(|other| {
            let claims = state
                .tickets
                .verify(cookie(headers, &ticket_cookie(other))?)
                .ok()?;
            let fresh = (now / 1000).saturating_sub(claims.iat) <= TICKET_MAX_AGE_SECS;
            (claims.room == *other && fresh).then(|| Shopper::new(claims.id, claims.uid))
        })
}

/// The language to answer a request in, among the room's (`Accept-Language`).
pub fn language<'a>(room: &'a Room, headers: &HeaderMap) -> &'a str {
    room.language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `Set-Cookie` values for the place's ticket and pass (`Secure` per `server.secure_cookies`).
pub fn place_cookies(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    place: &Place,
    now: u64,
) -> Vec<HeaderValue> {
    let secure = if secure_cookie(state, headers) {
        "; Secure"
    } else {
        ""
    };
    let (ticket_name, pass_name) = (ticket_cookie(&room.id), pass_cookie(&room.id));
    let mut cookies = Vec::new();
    // A browser that already holds exactly this cookie gets no Set-Cookie (most polls): the
    // value would not change, and every byte of a poll answer counts at crowd scale. Neither
    // does a client that presented this very ticket as a bearer token: it keeps the ticket
    // itself (the pass cookie is still set, for the pages behind the proxy).
    let held = |name: &str, value: &str| cookie(headers, name) == Some(value);
    if let Some(ticket) = place
        .ticket
        .as_ref()
        .filter(|t| bearer(headers) != Some(t.as_str()) && !held(&ticket_name, t))
    {
        cookies.push(format!(
            "{ticket_name}={ticket}; Path=/; Max-Age={TICKET_MAX_AGE_SECS}; HttpOnly; SameSite=Lax{secure}"
        ));
    }
    if let Some((pass, exp)) = place.pass.as_ref().filter(|(p, _)| !held(&pass_name, p)) {
        let max_age = exp.saturating_sub(now / 1000);
        cookies.push(format!(
            "{pass_name}={pass}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ));
    }
    cookies
        .iter()
        .filter_map(|c| HeaderValue::from_str(c).ok())
        .collect()
}

/// Gives the pending ticket of a 503'd join its cookie (same attributes as a place's ticket),
/// so a browser's retry presents it and finds the place the first attempt may have made.
pub fn with_pending_cookie(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    error: ApiError,
) -> ApiError {
    match error {
        ApiError::StoreUnavailable(Retry::WithTicket { ticket, .. }) => {
            let secure = if secure_cookie(state, headers) {
                "; Secure"
            } else {
                ""
            };
            let cookie = HeaderValue::from_str(&format!(
                "{}={ticket}; Path=/; Max-Age={PENDING_TICKET_SECS}; HttpOnly; SameSite=Lax{secure}",
                ticket_cookie(&room.id)
            ))
            .ok();
            ApiError::StoreUnavailable(Retry::WithTicket { ticket, cookie })
        }
        other => other,
    }
}

/// The `Set-Cookie` value that deletes the room's pass cookie (the ticket stays).
pub fn cleared_pass_cookie(room: &Room) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
        pass_cookie(&room.id)
    ))
    .ok()
}

/// `Set-Cookie` values that delete the room's ticket and pass cookies.
pub fn cleared_cookies(room: &Room) -> Vec<HeaderValue> {
    [ticket_cookie(&room.id), pass_cookie(&room.id)]
        .iter()
        .filter_map(|name| {
            HeaderValue::from_str(&format!(
                "{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
            ))
            .ok()
        })
        .collect()
}

/// Whether cookies get `Secure` (`server.secure_cookies`, or `auto` with an https
/// `X-Forwarded-Proto`): also whether the request came over https.
pub fn secure_cookie(state: &AppState, headers: &HeaderMap) -> bool {
    match state.config.server.secure_cookies {
        SecureCookies::True => true,
        SecureCookies::False => false,
        SecureCookies::Auto => headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")),
    }
}
