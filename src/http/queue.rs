//! Queue endpoints: join, position, leave, public room status.
//!
//! A poll of a waiting ticket is answered from the room's cached snapshot: verify the ticket's
//! HMAC, locate its sequence number, buffer a seen-record. Only a ticket at or past the serving
//! watermark (admitted, or evicted at the head) asks the store, once, to claim its session.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::body::{bearer, cookie, json, parse_optional_json, read_limited, Body};
use super::error::ApiError;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::config::{OnStoreError, RoomMode, SecureCookies};
use crate::pass::{TicketClaims, TokenError};
use crate::queue::drops::{self, Phase, Schedule};
use crate::queue::{Eta, Located, Room};
use crate::store::{JoinOutcome, LeaveOutcome, Lookup, RoomStatus, StoreError};

/// A ticket older than this is refused even with a valid signature: a place is not held for days.
const TICKET_MAX_AGE_SECS: u64 = 24 * 3600;
/// Longest accepted shop user key.
const MAX_USER_KEY_LEN: usize = 256;

/// Body of `join`.
#[derive(Debug, Default, Deserialize)]
struct JoinBody {
    /// The shop's user key: one place per user key, whatever device asks.
    user: Option<String>,
}

/// State of a place, as the JSON contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PlaceState {
    Waiting,
    Admitted,
    Expired,
    Closed,
    /// The sale behind the room has nothing left and nothing that could come back.
    SoldOut,
    /// In a scheduled drop's pre-queue: waits on a countdown; the place in line is drawn at
    /// opening.
    Prequeue,
}

#[derive(Debug, Serialize)]
pub(crate) struct EtaBody {
    pub(crate) p50: Option<u64>,
    pub(crate) p90: Option<u64>,
}

/// The answer of join and position (field names are the API contract).
#[derive(Debug, Serialize)]
pub(crate) struct PlaceBody {
    room: String,
    ticket: Option<String>,
    pub(crate) state: PlaceState,
    pub(crate) position: u64,
    pub(crate) ahead: u64,
    pub(crate) eta_seconds: EtaBody,
    pub(crate) poll_after_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_expires_at: Option<u64>,
    /// Units of the room's sale still available (absent for a room that sells nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) remaining: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) message: String,
    /// Scheduled drop, before the opening (pre-queue, or closed until then): when it opens
    /// (RFC 3339) and how long until then by the server's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) opens_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) opens_in_ms: Option<u64>,
}

/// What a handler decided about one place, before it becomes a response.
pub(crate) struct Place {
    pub(crate) state: PlaceState,
    pub(crate) ticket: Option<String>,
    pub(crate) position: u64,
    pass: Option<(String, u64)>,
}

impl Place {
    fn without_ticket(state: PlaceState) -> Self {
        Place {
            state,
            ticket: None,
            position: 0,
            pass: None,
        }
    }
}

fn ticket_cookie(room: &Room) -> String {
    format!("rg_ticket_{}", room.id)
}

fn pass_cookie(room: &Room) -> String {
    format!("rg_pass_{}", room.id)
}

pub(crate) fn room_or_404<'a>(state: &'a AppState, id: &str) -> Result<&'a Arc<Room>, ApiError> {
    state
        .rooms
        .get(id)
        .ok_or_else(|| ApiError::UnknownRoom(id.chars().take(64).collect()))
}

/// Verifies a ticket for `room`: signature, room, age.
fn verify_ticket(
    state: &AppState,
    room: &Room,
    token: &str,
    now_secs: u64,
) -> Result<TicketClaims, ApiError> {
    let claims = state.tickets.verify(token).map_err(ApiError::BadTicket)?;
    if claims.room != room.id.as_str() {
        return Err(ApiError::BadTicket(TokenError::WrongRoom(claims.room)));
    }
    if now_secs.saturating_sub(claims.iat) > TICKET_MAX_AGE_SECS {
        return Err(ApiError::BadTicket(TokenError::Expired));
    }
    Ok(claims)
}

/// `POST {prefix}/v1/rooms/{room}/join`
pub async fn join(
    state: &AppState,
    room_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = room_or_404(state, room_id)?;
    let (parts, body) = req.into_parts();
    let bytes = read_limited(&parts.headers, body).await?;
    let body: JoinBody = parse_optional_json(&bytes)?;
    let identity = match body.user.as_deref() {
        Some(user) => {
            let user = user.trim();
            if user.is_empty() || user.len() > MAX_USER_KEY_LEN {
                return Err(ApiError::InvalidField {
                    field: "user",
                    problem: "must be 1 to 256 bytes",
                });
            }
            Some(state.tickets.user_identity(user))
        }
        None => None,
    };

    let (status, place) = enter(state, room, &parts.headers, identity, true).await?;
    Ok(respond(state, room, &parts.headers, status, place))
}

/// Finds or makes the place of a shopper: the place of the ticket presented (a bearer ticket
/// only when `use_bearer`; it must then be valid, while a stale cookie is simply replaced), or
/// a new place for `identity` (a random one when `None`). Answers `200` for an existing place,
/// `201` for a new one. Shared by `join` and the proxy's auto-join.
pub(crate) async fn enter(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    identity: Option<String>,
    use_bearer: bool,
) -> Result<(StatusCode, Place), ApiError> {
    let now = now_ms();
    let now_secs = now / 1000;
    let phase = Schedule::of(&room.config).phase(now);
    if matches!(phase, Phase::Closed | Phase::NotYetOpen) {
        return Ok((StatusCode::OK, Place::without_ticket(PlaceState::Closed)));
    }
    if identity.is_none() {
        let presented = match bearer(headers).filter(|_| use_bearer) {
            Some(token) => Some(verify_ticket(state, room, token, now_secs)?),
            None => cookie(headers, &ticket_cookie(room))
                .and_then(|token| verify_ticket(state, room, token, now_secs).ok()),
        };
        if let Some(claims) = presented {
            if let Some(place) = existing_place(state, room, headers, &claims, now).await? {
                return Ok((StatusCode::OK, place));
            }
        }
    }

    if phase == Phase::Ended {
        // Places already held were answered above; no new ones after closes_at.
        return Ok((StatusCode::OK, Place::without_ticket(PlaceState::Closed)));
    }
    if room.stock_gate().is_some_and(|g| g.sold_out) {
        // Nothing to queue for: no place is made (a restock reopens joining).
        return Ok((StatusCode::OK, Place::without_ticket(PlaceState::SoldOut)));
    }
    let minted = identity.is_none();
    let identity = identity.unwrap_or_else(crate::pass::TicketSigner::anonymous_identity);
    if room.config.mode == RoomMode::Passthrough {
        let place = passthrough_place(state, room, &identity, now)?;
        return Ok((StatusCode::CREATED, place));
    }
    let outcome = match state
        .store
        .join(&room.id, &identity, minted, &room.params_now(), now)
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => return store_failed_join(state, room, &identity, e, now),
    };
    let (place, created) = match outcome {
        JoinOutcome::Closed => (Place::without_ticket(PlaceState::Closed), false),
        JoinOutcome::Prequeue { created } => {
            // No seq yet: the first poll after the opening learns it from the store.
            let ticket = sign(state, room, &identity, 0, now_secs, 0);
            (prequeue_place(ticket), created)
        }
        JoinOutcome::Waiting { seq, created } => {
            let position = match room.locate(seq) {
                Located::Waiting { position } => position,
                _ => 1,
            };
            room.record_seen(seq, now);
            let ticket = sign(state, room, &identity, seq, now_secs, position);
            let place = Place {
                state: PlaceState::Waiting,
                ticket: Some(ticket),
                position,
                pass: None,
            };
            (place, created)
        }
        JoinOutcome::Admitted { seq, created } => {
            room.note_admitted(seq);
            let ticket = sign(state, room, &identity, seq, now_secs, 1);
            let place = admitted_place(state, room, &identity, ticket, 1, now).await?;
            (place, created)
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, place))
}

/// The place a valid ticket still holds, or `None` when it holds nothing any more (a new join
/// then makes a new place).
async fn existing_place(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    claims: &TicketClaims,
    now: u64,
) -> Result<Option<Place>, ApiError> {
    let token = sign(state, room, &claims.id, claims.seq, claims.iat, claims.pos);
    let place = locate_place(state, room, headers, claims, token, now).await?;
    Ok((place.state != PlaceState::Expired).then_some(place))
}

/// Where a ticket stands now; asks the store only for a ticket past the serving watermark
/// that has no valid pass cookie yet.
async fn locate_place(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    claims: &TicketClaims,
    ticket: String,
    now: u64,
) -> Result<Place, ApiError> {
    match room.config.mode {
        RoomMode::Closed => return Ok(Place::without_ticket(PlaceState::Closed)),
        RoomMode::Passthrough => return passthrough_place(state, room, &claims.id, now),
        RoomMode::Queue | RoomMode::SafetyNet => {}
    }
    if claims.seq == 0 {
        if let Some(opens) = room.params.prequeue_until_ms {
            if now < opens && !room.snapshot().state.prequeue.frozen {
                // Before the opening a pre-queue ticket is answered from the cache.
                return Ok(prequeue_place(ticket));
            }
            return resolve_prequeue(state, room, headers, claims, now).await;
        }
    }
    match room.locate(claims.seq) {
        Located::Waiting { position } => {
            if room.snapshot().state.status == RoomStatus::Closed {
                return Ok(Place::without_ticket(PlaceState::Closed));
            }
            room.record_seen(claims.seq, now);
            let sold_out = room.stock_gate().is_some_and(|g| g.sold_out);
            Ok(Place {
                // A sold-out waiter keeps its place: a restock puts it back in line.
                state: if sold_out {
                    PlaceState::SoldOut
                } else {
                    PlaceState::Waiting
                },
                ticket: Some(ticket),
                position,
                pass: None,
            })
        }
        Located::Gone => Ok(Place {
            state: PlaceState::Expired,
            ticket: Some(ticket),
            position: 0,
            pass: None,
        }),
        Located::PastHead => {
            if let Some(pass) = cookie(headers, &pass_cookie(room)) {
                if let Ok(c) = state.passes.verify_for_room(pass, room.id.as_str()) {
                    if c.sub == claims.id {
                        return Ok(Place {
                            state: PlaceState::Admitted,
                            ticket: Some(ticket),
                            position: 0,
                            pass: Some((pass.to_string(), c.exp)),
                        });
                    }
                }
            }
            admitted_place(state, room, &claims.id, ticket, claims.pos, now).await
        }
    }
}

fn prequeue_place(ticket: String) -> Place {
    Place {
        state: PlaceState::Prequeue,
        ticket: Some(ticket),
        position: 0,
        pass: None,
    }
}

/// A pre-queue ticket (no seq) from the opening on: asks the store where its identity stands
/// (one call) and re-issues the ticket with its seq, so later polls are answered from the cache.
async fn resolve_prequeue(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    claims: &TicketClaims,
    now: u64,
) -> Result<Place, ApiError> {
    let same = || sign(state, room, &claims.id, 0, claims.iat, 0);
    match state
        .store
        .lookup(&room.id, &claims.id, &room.params, now)
        .await?
    {
        Lookup::Prequeue => Ok(prequeue_place(same())),
        Lookup::Absent => Ok(Place {
            state: PlaceState::Expired,
            ticket: Some(same()),
            position: 0,
            pass: None,
        }),
        Lookup::Admitted => {
            if let Some(place) = pass_cookie_place(state, room, headers, &claims.id, same()) {
                return Ok(place);
            }
            admitted_place(state, room, &claims.id, same(), 0, now).await
        }
        Lookup::Waiting { seq } => {
            let position = match room.locate(seq) {
                Located::Waiting { position } => position,
                _ => 1,
            };
            room.record_seen(seq, now);
            Ok(Place {
                state: PlaceState::Waiting,
                ticket: Some(sign(state, room, &claims.id, seq, claims.iat, position)),
                position,
                pass: None,
            })
        }
    }
}

/// The admitted place of a shopper whose valid pass cookie for this room names `identity`.
fn pass_cookie_place(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    identity: &str,
    ticket: String,
) -> Option<Place> {
    let pass = cookie(headers, &pass_cookie(room))?;
    let c = state.passes.verify_for_room(pass, room.id.as_str()).ok()?;
    (c.sub == identity).then(|| Place {
        state: PlaceState::Admitted,
        ticket: Some(ticket),
        position: 0,
        pass: Some((pass.to_string(), c.exp)),
    })
}

/// Mode `passthrough`: admitted at once with a pass, no queue and no store call.
fn passthrough_place(
    state: &AppState,
    room: &Room,
    identity: &str,
    now: u64,
) -> Result<Place, ApiError> {
    let exp = (now + room.params.session_ms) / 1000;
    let pass = state
        .passes
        .issue(room.id.as_str(), identity, 0, now / 1000, exp)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Place {
        state: PlaceState::Admitted,
        ticket: Some(sign(state, room, identity, 0, now / 1000, 0)),
        position: 0,
        pass: Some((pass, exp)),
    })
}

/// Claims the session of an admitted identity and signs its pass; expired when the store says
/// the admission is gone.
async fn admitted_place(
    state: &AppState,
    room: &Room,
    identity: &str,
    ticket: String,
    pos: u64,
    now: u64,
) -> Result<Place, ApiError> {
    let expiry_ms = match state
        .store
        .claim(&room.id, identity, &room.params, now)
        .await
    {
        Ok(Some(expiry)) => expiry,
        Ok(None) => {
            return Ok(Place {
                state: PlaceState::Expired,
                ticket: Some(ticket),
                position: 0,
                pass: None,
            })
        }
        Err(StoreError::Unavailable(_))
            if state.config.store.on_store_error == OnStoreError::FailOpen =>
        {
            now + room.params.session_ms
        }
        Err(e) => return Err(e.into()),
    };
    let exp = expiry_ms / 1000;
    let pass = state
        .passes
        .issue(room.id.as_str(), identity, pos, now / 1000, exp)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Place {
        state: PlaceState::Admitted,
        ticket: Some(ticket),
        position: 0,
        pass: Some((pass, exp)),
    })
}

/// A join the store could not take: fail closed with 503, or fail open by admitting directly.
fn store_failed_join(
    state: &AppState,
    room: &Room,
    identity: &str,
    error: StoreError,
    now: u64,
) -> Result<(StatusCode, Place), ApiError> {
    if !matches!(error, StoreError::Unavailable(_))
        || state.config.store.on_store_error == OnStoreError::FailClosed
    {
        return Err(error.into());
    }
    tracing::warn!(room = %room.id, "store unavailable: failing open, admitting without queueing");
    let exp = (now + room.params.session_ms) / 1000;
    let pass = state
        .passes
        .issue(room.id.as_str(), identity, 0, now / 1000, exp)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let place = Place {
        state: PlaceState::Admitted,
        ticket: Some(sign(state, room, identity, 0, now / 1000, 0)),
        position: 0,
        pass: Some((pass, exp)),
    };
    Ok((StatusCode::CREATED, place))
}

/// `GET {prefix}/v1/rooms/{room}/position`
pub async fn position(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = room_or_404(state, room_id)?;
    let headers = req.headers();
    let token = presented_ticket(room, headers)?;
    let now = now_ms();
    let claims = verify_ticket(state, room, token, now / 1000)?;
    let place = locate_place(state, room, headers, &claims, token.to_string(), now).await?;
    Ok(respond(state, room, headers, StatusCode::OK, place))
}

/// `POST {prefix}/v1/rooms/{room}/leave`
pub async fn leave(
    state: &AppState,
    room_id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = room_or_404(state, room_id)?;
    let headers = req.headers();
    let token = presented_ticket(room, headers)?;
    let claims = verify_ticket(state, room, token, now_ms() / 1000)?;
    let outcome = state.store.leave(&room.id, &claims.id).await?;
    let left = match outcome {
        LeaveOutcome::LeftQueue => "waiting",
        LeaveOutcome::EndedSession => "admitted",
        LeaveOutcome::Absent => "nothing",
    };
    let mut resp = json(
        StatusCode::OK,
        &serde_json::json!({ "room": room.id.as_str(), "state": "left", "gave_up": left }),
    );
    for name in [ticket_cookie(room), pass_cookie(room)] {
        append_cookie(
            &mut resp,
            &format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }
    Ok(resp)
}

/// `GET {prefix}/v1/rooms/{room}`: public status, from the cache.
pub fn status(state: &AppState, room_id: &str) -> Result<Response<Body>, ApiError> {
    let room = room_or_404(state, room_id)?;
    let snap = room.snapshot();
    let s = &snap.state;
    let eta = room.eta(s.waiting.max(1));
    let gate = room.stock_gate();
    let (admit_per_minute, max_active) = room.settings_in_force(s);
    let schedule = Schedule::of(&room.config);
    let now = now_ms();
    let pre = s.prequeue;
    let opening_started = pre.frozen && schedule.opens_at.is_some_and(|o| now >= o);
    let phase = match schedule.phase(now) {
        Phase::Open if schedule.prequeue_opens_at.is_some() && !pre.opened() => "opening",
        other => other.as_str(),
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "room": room.id.as_str(),
            "state": s.status.as_str(),
            "waiting": s.waiting,
            "active": s.active,
            "admit_per_minute": admit_per_minute,
            "max_active": max_active,
            "serving": s.served,
            "last_number": s.last_seq,
            "admitted_total": s.admitted_total,
            "admission_rate_per_minute": (snap.rates.p50 * 60.0).round(),
            "eta_seconds_for_last": eta.p50,
            "sold_out": gate.is_some_and(|g| g.sold_out),
            "remaining": gate.map(|g| g.remaining),
            "message": room.config.message,
            "mode": room.config.mode.as_str(),
            "phase": phase,
            "prequeue_opens_at": schedule.prequeue_opens_at.and_then(drops::rfc3339),
            "opens_at": schedule.opens_at.and_then(drops::rfc3339),
            "closes_at": schedule.closes_at.and_then(drops::rfc3339),
            "prequeue_waiting": pre.waiting,
            "prequeue_count": pre.frozen.then_some(pre.count),
            // Committed when the pre-queue opens; the seed itself only once it froze at opening,
            // so nobody can pick an identity that sorts first.
            "seed_sha256": s.seed.as_deref().and_then(drops::seed_commitment),
            "seed": s.seed.as_deref().filter(|_| opening_started),
        }),
    ))
}

fn presented_ticket<'a>(room: &Room, headers: &'a HeaderMap) -> Result<&'a str, ApiError> {
    bearer(headers)
        .or_else(|| cookie(headers, &ticket_cookie(room)))
        .ok_or_else(|| ApiError::MissingTicket(ticket_cookie(room)))
}

fn sign(state: &AppState, room: &Room, id: &str, seq: u64, iat: u64, pos: u64) -> String {
    state.tickets.sign(&TicketClaims {
        room: room.id.as_str().to_string(),
        id: id.to_string(),
        seq,
        iat,
        pos,
    })
}

/// The JSON place body (join / position contract) with the place's cookies.
pub(crate) fn respond(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    status: StatusCode,
    place: Place,
) -> Response<Body> {
    let mut resp = json(status, &place_body(room, &place));
    for cookie in place_cookies(state, room, headers, &place) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

/// What the place body says about `place`: ETA, poll interval, remaining stock, message.
pub(crate) fn place_body(room: &Room, place: &Place) -> PlaceBody {
    let eta = match place.state {
        PlaceState::Waiting => room.eta(place.position),
        // Nothing is being sold to wait for: no estimate until a restock.
        PlaceState::SoldOut | PlaceState::Prequeue => Eta {
            p50: None,
            p90: None,
        },
        _ => Eta {
            p50: Some(0),
            p90: Some(0),
        },
    };
    let now = now_ms();
    let opens_at = Schedule::of(&room.config)
        .opens_at
        .filter(|&o| place.state == PlaceState::Prequeue || now < o);
    let opens_in_ms = opens_at.map(|o| o.saturating_sub(now));
    let poll_after_ms = match opens_in_ms {
        // Countdown: poll about when the room opens (every node answers this from its cache).
        Some(ms) if place.state == PlaceState::Prequeue => {
            let until = ms.div_ceil(1000);
            room.poll_after_ms(&Eta {
                p50: Some(until),
                p90: Some(until),
            })
            .min(ms.max(1000))
        }
        _ => room.poll_after_ms(&eta),
    };
    PlaceBody {
        room: room.id.as_str().to_string(),
        ticket: place.ticket.clone(),
        state: place.state,
        position: place.position,
        ahead: place.position.saturating_sub(1),
        eta_seconds: EtaBody {
            p50: eta.p50,
            p90: eta.p90,
        },
        poll_after_ms,
        pass: place.pass.as_ref().map(|(p, _)| p.clone()),
        pass_expires_at: place.pass.as_ref().map(|(_, exp)| *exp),
        remaining: room.stock_gate().map(|g| g.remaining),
        message: room.config.message.clone(),
        opens_at: opens_at.and_then(drops::rfc3339),
        opens_in_ms,
    }
}

/// `Set-Cookie` values for the place's ticket and pass (`Secure` per `server.secure_cookies`).
pub(crate) fn place_cookies(
    state: &AppState,
    room: &Room,
    headers: &HeaderMap,
    place: &Place,
) -> Vec<HeaderValue> {
    let secure = if secure_cookie(state, headers) {
        "; Secure"
    } else {
        ""
    };
    let mut cookies = Vec::new();
    // A browser that already holds exactly this cookie gets no Set-Cookie (most polls): the
    // value would not change, and every byte of a poll answer counts at crowd scale. Neither
    // does a client that presented this very ticket as a bearer token: it keeps the ticket
    // itself (the pass cookie is still set, for the pages behind the proxy).
    let held = |name: &str, value: &str| cookie(headers, name) == Some(value);
    if let Some(ticket) = place
        .ticket
        .as_ref()
        .filter(|t| bearer(headers) != Some(t.as_str()) && !held(&ticket_cookie(room), t))
    {
        cookies.push(format!(
            "{}={ticket}; Path=/; Max-Age={TICKET_MAX_AGE_SECS}; HttpOnly; SameSite=Lax{secure}",
            ticket_cookie(room)
        ));
    }
    if let Some((pass, exp)) = place
        .pass
        .as_ref()
        .filter(|(p, _)| !held(&pass_cookie(room), p))
    {
        let max_age = exp.saturating_sub(now_ms() / 1000);
        cookies.push(format!(
            "{}={pass}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            pass_cookie(room)
        ));
    }
    cookies
        .iter()
        .filter_map(|c| HeaderValue::from_str(c).ok())
        .collect()
}

fn secure_cookie(state: &AppState, headers: &HeaderMap) -> bool {
    match state.config.server.secure_cookies {
        SecureCookies::True => true,
        SecureCookies::False => false,
        SecureCookies::Auto => headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https")),
    }
}

fn append_cookie(resp: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}
