//! The operator's admin API under `/admin/v1` on the admin listener (routed by
//! [`super::router`]): room controls (pause,
//! resume, drain, close, open, live rate and cap), sale stock, reservations, and a status view.
//!
//! Every change is written to the shared store, so it reaches every node on the same store at
//! its next refresh (well within one second at the default `store.refresh_ms`).

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::Body;
use super::credentials::bearer_is;
use super::error::{ApiError, Retry};
use super::json::{json, parse_json, read_limited};
use crate::clock::now_ms;
use crate::http::state::AppState;
use crate::id::Identity;
use crate::queue::message::RoomMessage;
use crate::queue::{control, Room};
use crate::store::{LeaveOutcome, RoomStatus, StoreError};

/// Checks `Authorization: Bearer <admin.token>` in constant time. Without a configured token
/// the API is open (config validation allows that only on a loopback admin listener).
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.config.admin.token() {
        Some(expected) if !bearer_is(headers, expected) => Err(ApiError::AdminUnauthorized),
        _ => Ok(()),
    }
}

/// `GET /admin/v1/rooms/{room}`: the room's figures from this node's cache.
pub fn room(state: &AppState, room: &str) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    Ok(json(StatusCode::OK, &room_stats(state, room)))
}

/// A room's figures from this node's cache (refreshed every `store.refresh_ms`).
fn room_stats(state: &AppState, room: &Room) -> Value {
    let snap = room.snapshot();
    let s = &snap.state;
    let (rate, max_active) = room.settings_in_force(s);
    let gate = room.stock_gate();
    json!({
        "room": room.id.as_str(),
        "state": s.status.as_str(),
        "store_mode": room.outage.mode_name(),
        "lease": room.outage.capped().then(|| {
            let l = room.outage.lease_view(crate::clock::now_ms());
            json!({ "slots": l.slots, "used": l.used, "usable_ms": l.usable_ms })
        }),
        "waiting": s.waiting,
        "active": s.active,
        "admit_per_minute": rate,
        "max_active": max_active,
        "configured": {
            "admit_per_minute": room.config.admit_per_minute,
            "max_active": room.config.max_active,
        },
        "measured_admissions_per_minute": (snap.rates.p50 * 60.0).round(),
        "serving": s.served,
        "last_number": s.last_seq,
        "admitted_total": s.admitted_total,
        "evicted_total": s.evicted_total,
        "left_total": s.left_total,
        "eta_seconds_for_last": room.eta(s.waiting.max(1)).p50,
        "sale": state.sales.for_room(room.id.as_str()).map(|sale| sale.config.id.clone()),
        "remaining": gate.map(|g| g.remaining),
        "sold_out": gate.is_some_and(|g| g.sold_out),
    })
}

/// `GET /admin/v1/status`: every room and sale, from this node's caches.
pub fn status(state: &AppState) -> Response<Body> {
    let mut rooms: Vec<Value> = state.rooms.iter().map(|r| room_stats(state, r)).collect();
    rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    let mut sales: Vec<Value> = state
        .sales
        .iter()
        .map(|sale| {
            let s = sale.cached_state().unwrap_or_default();
            json!({
                "sale": sale.config.id,
                "room": sale.config.room,
                "available": s.available,
                "reserved": s.reserved,
                "confirmed": s.confirmed,
                "total": s.total,
                "sold_out": s.sold_out(),
            })
        })
        .collect();
    sales.sort_by(|a, b| a["sale"].as_str().cmp(&b["sale"].as_str()));
    json(StatusCode::OK, &json!({ "rooms": rooms, "sales": sales }))
}

pub async fn set_status(
    state: &AppState,
    room: &str,
    action: &str,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    let status = match action {
        "pause" => RoomStatus::Paused,
        "close" => RoomStatus::Closed,
        "drain" => RoomStatus::Draining,
        _ => RoomStatus::Open, // resume, open
    };
    control::set_status(&*state.store, &state.webhooks, room, status, now_ms()).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "room": room.id.as_str(), "state": status.as_str() }),
    ))
}

/// `POST /admin/v1/rooms/{room}/sessions/{sub}/end`: ends the place or session of the pass
/// subject `sub` (the `sub` claim of the pass the shop received): the slot frees for the next
/// waiter and every pass of it is refused on every node from its next refresh. Answers what
/// was given up (`admitted`, `waiting` or `nothing`; passes are revoked either way).
pub async fn end_session(
    state: &AppState,
    room: &str,
    sub: &str,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    let sub = Identity::parse(sub).ok_or(ApiError::InvalidField {
        field: "sub",
        problem: "must be the 16-character `sub` of a pass",
    })?;
    let ended = state.places().end_session(room, &sub, now_ms()).await?;
    let gave_up = match ended {
        LeaveOutcome::EndedSession => "admitted",
        LeaveOutcome::LeftQueue => "waiting",
        LeaveOutcome::Absent | LeaveOutcome::Moved => "nothing",
    };
    Ok(json(
        StatusCode::OK,
        &json!({ "room": room.id.as_str(), "sub": sub.as_str(), "ended": gave_up, "revoked": true }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    admit_per_minute: Option<u32>,
    max_active: Option<u32>,
}

/// `POST /admin/v1/rooms/{room}/settings` `{"admit_per_minute"?, "max_active"?}`: live on
/// every node from its next tick.
pub async fn settings(
    state: &AppState,
    room: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    let (parts, body) = req.into_parts();
    let body: SettingsBody = parse_json(&read_limited(&parts, body).await?)?;
    let invalid = |field| ApiError::InvalidField {
        field,
        problem: "must be greater than 0",
    };
    if body.admit_per_minute == Some(0) {
        return Err(invalid("admit_per_minute"));
    }
    if body.max_active == Some(0) {
        return Err(invalid("max_active"));
    }
    if body.admit_per_minute.is_none() && body.max_active.is_none() {
        return Err(ApiError::InvalidField {
            field: "admit_per_minute",
            problem: "give admit_per_minute, max_active or both",
        });
    }
    control::set_settings(&*state.store, room, body.admit_per_minute, body.max_active).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "room": room.id.as_str(),
            "admit_per_minute": body.admit_per_minute,
            "max_active": body.max_active,
        }),
    ))
}

/// `POST /admin/v1/rooms/{room}/message` `{"message": "...", "messages": {"ko": "..."}}`: the
/// room's message on every node from its next refresh on, pushed to every open event stream;
/// `messages` gives it per language (each one of the room's `languages`). An empty message
/// gives the configured one back. 400 for a message over the length limit, with control
/// characters or for a language the room does not offer (nothing changed).
pub async fn message(
    state: &AppState,
    room: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    let (parts, body) = req.into_parts();
    let body: RoomMessage = parse_json(&read_limited(&parts, body).await?)?;
    let version = control::set_message(&*state.store, room, &body)
        .await
        .map_err(|e| match e {
            control::SetMessageError::Invalid(e) => ApiError::InvalidMessage(e),
            control::SetMessageError::Store(e) => e.into(),
        })?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "room": room.id.as_str(),
            "message": body.message,
            "messages": body.messages,
            "version": version,
            "cleared": body.is_empty(),
        }),
    ))
}

/// `GET /admin/v1/sales/{sale}`: counters read from the store now.
pub async fn sale_stats(state: &AppState, sale: &str) -> Result<Response<Body>, ApiError> {
    let sale = state.sale(sale)?;
    let s = state.sale_store.sale_state(&sale.id).await?;
    let events = state.sale_store.order_events(&sale.id).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "sale": sale.config.id,
            "room": sale.config.room,
            "available": s.available,
            "reserved": s.reserved,
            "confirmed": s.confirmed,
            "total": s.total,
            "sold_out": s.sold_out(),
            "order_events": events,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    units: i64,
}

/// `POST /admin/v1/sales/{sale}/stock` `{"units": n}`: adds (or, negative, removes unsold)
/// units; a sold-out room reopens on every node at its next refresh.
pub async fn stock(
    state: &AppState,
    sale: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let sale = state.sale(sale)?;
    let (parts, body) = req.into_parts();
    let body: StockBody = parse_json(&read_limited(&parts, body).await?)?;
    if body.units == 0 {
        return Err(ApiError::InvalidField {
            field: "units",
            problem: "must not be 0",
        });
    }
    let (applied, available) = state
        .sale_store
        .add_stock(&sale.id, body.units, now_ms())
        .await
        .map_err(|e| match e {
            // A change of stock is not idempotent: the operator reads the counters first.
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(Retry::CheckFirst(format!(
                "GET /admin/v1/sales/{}",
                sale.config.id
            ))),
            other => other.into(),
        })?;
    tracing::info!(sale = %sale.config.id, applied, available, "stock changed by operator");
    Ok(json(
        StatusCode::OK,
        &json!({ "sale": sale.config.id, "applied": applied, "available": available }),
    ))
}

/// `POST /admin/v1/reload`: 200 with what changed, or 422 listing every problem (the running
/// configuration stays).
pub async fn reload(state: &AppState) -> Result<Response<Body>, ApiError> {
    let Some(handle) = &state.reload else {
        return Err(ApiError::Internal("reload is not available".into()));
    };
    match handle.reload().await {
        Ok(report) => Ok(json(
            StatusCode::OK,
            &json!({ "reloaded": true, "report": report }),
        )),
        Err(refused) => Err(ApiError::ReloadRefused(refused.problems)),
    }
}
