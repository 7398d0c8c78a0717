//! Queue endpoints: join, position, leave, public room status. Each reads the request into
//! typed values, asks [`crate::queue::place`] (the admission rules) and renders the answer.

use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::body::Body;
use super::credentials::{
    bearer, cookie, pass_from_cookie, presented_ticket, ticket_cookie, PeerAddr,
};
use super::error::ApiError;
use super::json::{json, parse_optional_json, read_limited};
use super::place::{cleared_cookies, respond};
use super::pow::{self, PowAnswer};
use super::state::AppState;
use crate::clock::now_ms;
use crate::pass::TicketClaims;
use crate::queue::place::{identify, room_status, Places, Presented};
use crate::queue::Room;
use crate::store::LeaveOutcome;

/// Longest accepted shop user key.
const MAX_USER_KEY_LEN: usize = 256;

/// Body of `join`.
#[derive(Debug, Default, Deserialize)]
struct JoinBody {
    /// The shop's user key: one place per user key, whatever device asks. Trusted as sent, so
    /// refused once `[identity]` has a key.
    user: Option<String>,
    /// A shop-signed user token (JWT): joins as its `sub`.
    user_token: Option<String>,
    /// A solved proof-of-work challenge, for a room that asks for one before a new place.
    pow: Option<PowAnswer>,
}

/// `POST {prefix}/v1/rooms/{room}/join`: the place of the bearer ticket presented, or a new
/// one (`201`) for the body's `user` key (or a random identity). A room with `pow` on answers a
/// new place's request without a solution `401 pow-required` with a challenge (nothing
/// changes); the place of a valid ticket is never asked for work.
pub async fn join(
    state: &AppState,
    room_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<PeerAddr>().copied();
    let bytes = read_limited(&parts.headers, body).await?;
    let body: JoinBody = parse_optional_json(&bytes)?;
    let headers = &parts.headers;
    let user = body.user.as_deref().map(str::trim);
    if user.is_some_and(|u| u.is_empty() || u.len() > MAX_USER_KEY_LEN) {
        return Err(ApiError::InvalidField {
            field: "user",
            problem: "must be 1 to 256 bytes",
        });
    }
    let now = now_ms();
    let shopper = identify(
        state.user_tokens.as_ref(),
        &state.tickets,
        user,
        body.user_token.as_deref(),
        now / 1000,
    )
    .await?;
    // A bearer ticket was chosen by the client and must be valid; a stale cookie is replaced.
    let presented = match bearer(headers) {
        Some(token) => Some(Presented {
            token,
            strict: true,
        }),
        None => cookie(headers, &ticket_cookie(&room.id)).map(|token| Presented {
            token,
            strict: false,
        }),
    };
    let pass = pass_from_cookie(headers, &room.id);
    let work = pow::work(
        state,
        headers,
        peer,
        body.pow.as_ref().map(PowAnswer::as_answer),
    );
    let entered = state
        .places()
        .enter(room, presented, pass, shopper, work, now)
        .await?;
    let status = if entered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond(state, room, headers, status, entered.place, now))
}

/// `GET {prefix}/v1/rooms/{room}/position`
pub async fn position(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let headers = req.headers();
    let now = now_ms();
    let places = state.places();
    let (token, claims) = verified_ticket(&places, room, headers, now)?;
    let pass = pass_from_cookie(headers, &room.id);
    let place = places
        .locate(room, &claims, token.to_string(), pass, now)
        .await?;
    Ok(respond(state, room, headers, StatusCode::OK, place, now))
}

/// The ticket a request presents for `room` (bearer, else cookie) and its verified claims:
/// `401 missing-ticket` without one, `401 invalid-ticket` for a forged, foreign or old one.
fn verified_ticket<'a>(
    places: &Places<'_>,
    room: &Room,
    headers: &'a HeaderMap,
    now: u64,
) -> Result<(&'a str, TicketClaims), ApiError> {
    let token = presented_ticket(headers, &room.id)
        .ok_or_else(|| ApiError::MissingTicket(ticket_cookie(&room.id)))?;
    let claims = places
        .verify_ticket(room, token, now / 1000)
        .map_err(ApiError::BadTicket)?;
    Ok((token, claims))
}

/// `POST {prefix}/v1/rooms/{room}/leave`
pub async fn leave(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let headers = req.headers();
    let places = state.places();
    let (_, claims) = verified_ticket(&places, room, headers, now_ms())?;
    let left = match places.leave(room, &claims).await? {
        LeaveOutcome::LeftQueue => "waiting",
        LeaveOutcome::EndedSession => "admitted",
        LeaveOutcome::Absent => "nothing",
    };
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({ "room": room.id.as_str(), "state": "left", "gave_up": left }),
    );
    for cookie in cleared_cookies(room) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(resp)
}

/// `GET {prefix}/v1/rooms/{room}`: public status, from the cache.
pub fn status(state: &AppState, room_id: &str) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    Ok(json(StatusCode::OK, &room_status(room, now_ms())))
}
