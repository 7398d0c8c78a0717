//! Queue endpoints: join, position, leave, public room status. Each reads the request into
//! typed values, asks [`crate::queue::place`] (the admission rules) and renders the answer.

use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::body::{full, Body};
use super::credentials::{
    bearer, cookie, pass_from_cookie, presented_ticket, ticket_cookie, PeerAddr,
};
use super::error::ApiError;
use super::json::{json, parse_optional_json, read_limited};
use super::place::{cleared_cookies, group_shopper, respond, with_pending_cookie};
use super::pow::{self, PowAnswer};
use super::proxy::{is_local_path, percent_decode, percent_encode, query_param};
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
    let bytes = read_limited(&parts, body).await?;
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
    // A browser new to this room of a group is the shopper its ticket elsewhere in the group
    // names.
    let shopper = match (shopper, presented) {
        (None, None) => group_shopper(state, room, headers, now),
        (shopper, _) => shopper,
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
        .await
        .map_err(|e| with_pending_cookie(state, room, headers, e.into()))?;
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
pub(super) fn verified_ticket<'a>(
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
    let now = now_ms();
    let (_, claims) = verified_ticket(&places, room, headers, now)?;
    let left = match places.leave(room, &claims, now).await? {
        LeaveOutcome::LeftQueue => "waiting",
        LeaveOutcome::EndedSession => "admitted",
        LeaveOutcome::Absent => "nothing",
        LeaveOutcome::Moved => "nothing",
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

/// `POST {prefix}/v1/rooms/{room}/transfer` (ticket required): a one-time code that moves the
/// place to another device, the URL that claims it (rendered as a QR code in `qr_svg`), and
/// how many seconds it works. Body (optional): `{"return": "/path"}`, where the claiming
/// device goes after the claim.
pub async fn transfer(
    state: &AppState,
    room_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let (parts, body) = req.into_parts();
    let now = now_ms();
    let places = state.places();
    let (_, claims) = verified_ticket(&places, room, &parts.headers, now)?;
    let bytes = read_limited(&parts, body).await?;
    let body: TransferBody = parse_optional_json(&bytes)?;
    let (code, expires_in) = places.offer_transfer(room, &claims, now).await?;
    let mut path = format!(
        "{}/v1/rooms/{}/claim?code={code}",
        state.config.server.api_prefix, room.id
    );
    if let Some(ret) = body.return_to.as_deref().filter(|r| is_local_path(r)) {
        path.push_str("&return=");
        path.push_str(&percent_encode(ret));
    }
    let url = absolute_url(state, &parts.headers, &path);
    let qr = qrcode::QrCode::new(url.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(160, 160)
                .build()
        })
        .ok();
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({
            "room": room.id.as_str(),
            "code": code,
            "url": url,
            "expires_in": expires_in,
            "qr_svg": qr,
        }),
    ))
}

/// Body of `transfer`.
#[derive(Debug, Default, Deserialize)]
struct TransferBody {
    /// A path on this site the claiming device opens after the claim.
    #[serde(rename = "return")]
    return_to: Option<String>,
}

/// Body of `claim`.
#[derive(Debug, Default, Deserialize)]
struct ClaimBody {
    /// The transfer code.
    code: Option<String>,
    /// The claim id a 503 gave, when repeating that claim.
    claim_id: Option<String>,
}

/// Longest transfer code text looked at (codes are 10 characters; spaces and dashes allowed).
const MAX_CODE_LEN: usize = 32;

/// `POST {prefix}/v1/rooms/{room}/claim` with `{"code"}`: moves the place to this device
/// (same position, a new ticket cookie; the pass too when admitted). The code works once, on
/// any node. `GET` with `?code=` answers a small page that claims it from the browser (the
/// target of the QR code).
pub async fn claim(
    state: &AppState,
    room_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let (parts, body) = req.into_parts();
    let bytes = read_limited(&parts, body).await?;
    let body: ClaimBody = parse_optional_json(&bytes)?;
    let code = body
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= MAX_CODE_LEN)
        .ok_or(ApiError::InvalidField {
            field: "code",
            problem: "required: the 10-character transfer code",
        })?;
    let claim_id = body.claim_id.as_deref();
    if claim_id.is_some_and(|c| {
        c.is_empty() || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_alphanumeric())
    }) {
        return Err(ApiError::InvalidField {
            field: "claim_id",
            problem: "must be the claim_id a 503 answer gave (1 to 64 letters and digits)",
        });
    }
    let now = now_ms();
    let pass = pass_from_cookie(&parts.headers, &room.id);
    let place = state
        .places()
        .claim_transfer(room, code, claim_id, pass, now)
        .await?;
    Ok(respond(
        state,
        room,
        &parts.headers,
        StatusCode::OK,
        place,
        now,
    ))
}

/// `GET {prefix}/v1/rooms/{room}/claim?code=...[&return=/path]`: the page a scanned QR code
/// opens. It claims the code with a `POST` from the browser (a link preview or prefetch that
/// only GETs moves nothing) and then goes to `return` (a path on this site) or `/`.
pub fn claim_page(
    state: &AppState,
    room_id: &str,
    uri: &http::Uri,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let query = |name: &str| query_param(uri, name).map(percent_decode);
    let code: String = query("code")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(MAX_CODE_LEN)
        .collect();
    let back = query("return")
        .filter(|r| is_local_path(r))
        .unwrap_or_else(|| "/".to_string());
    let claim_url = format!(
        "{}/v1/rooms/{}/claim",
        state.config.server.api_prefix, room.id
    );
    let html = CLAIM_PAGE
        .replace("{{code}}", &code)
        .replace("{{claim_url}}", &escape_js(&claim_url))
        .replace("{{return_url}}", &escape_js(&back));
    let mut resp = Response::new(full(html));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// The claim page (see [`claim_page`]); `{{code}}` is alphanumeric, the URLs are JS-escaped.
const CLAIM_PAGE: &str = include_str!("../../web/claim.html");

/// `s` safe inside a JS string literal in a `<script>` block.
fn escape_js(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '/' | '-' | '_' | '.' | '?' | '=' | '&' => {
                vec![c]
            }
            other => {
                let mut units = [0u16; 2];
                other
                    .encode_utf16(&mut units)
                    .iter()
                    .flat_map(|u| format!("\\u{u:04x}").chars().collect::<Vec<_>>())
                    .collect()
            }
        })
        .collect()
}

/// `url` with an absolute origin for the device that scans it: the request's host, https
/// when the request came over https (per `X-Forwarded-Proto` from a trusted proxy, or
/// `server.secure_cookies = true`).
fn absolute_url(state: &AppState, headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
    match host {
        Some(host) => {
            let scheme = if crate::http::place::secure_cookie(state, headers) {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}{path}")
        }
        None => path.to_string(),
    }
}

/// `GET {prefix}/v1/rooms/{room}`: public status, from the cache.
pub fn status(state: &AppState, room_id: &str) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    Ok(json(StatusCode::OK, &room_status(room, now_ms())))
}
