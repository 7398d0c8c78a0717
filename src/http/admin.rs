//! The operator's admin API under `/admin/v1` on the admin listener: room controls (pause,
//! resume, drain, close, open, live rate and cap), sale stock, reservations, and a status view.
//!
//! Every change is written to the shared store, so it reaches every node on the same store at
//! its next refresh (well within one second at the default `store.refresh_ms`).

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::Body;
use super::credentials::bearer_is;
use super::error::ApiError;
use super::json::{json, parse_json, read_limited};
use super::sale::settle_reservation;
use crate::clock::now_ms;
use crate::config::WebhookEvent;
use crate::http::state::AppState;
use crate::queue::Room;
use crate::store::sale::ReservationState;
use crate::store::RoomStatus;

/// Checks `Authorization: Bearer <admin.token>` in constant time. Without a configured token
/// the API is open (config validation allows that only on a loopback admin listener).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match state.config.admin.token() {
        Some(expected) if !bearer_is(headers, expected) => Err(ApiError::AdminUnauthorized),
        _ => Ok(()),
    }
}

/// Routes `/admin/v1/...` (`rest` is the part after `/admin/v1/`). Returns the route label
/// for metrics with the result.
pub async fn route(
    state: &AppState,
    rest: &str,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    if let Err(e) = authorize(state, req.headers()) {
        return ("admin", Err(e));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["status"], Method::GET) => ("admin_status", Ok(status(state))),
        (["reload"], Method::POST) => ("admin_reload", reload(state).await),
        (["rooms", room], Method::GET) => (
            "admin_room",
            state
                .room(room)
                .map(|r| json(StatusCode::OK, &room_stats(state, r))),
        ),
        (
            ["rooms", room, action @ ("pause" | "resume" | "open" | "close" | "drain")],
            Method::POST,
        ) => ("admin_room_state", set_status(state, room, action).await),
        (["rooms", room, "settings"], Method::POST) => {
            ("admin_room_settings", settings(state, room, req).await)
        }
        (["sales", sale], Method::GET) => ("admin_sale", sale_stats(state, sale).await),
        (["sales", sale, "stock"], Method::POST) => {
            ("admin_sale_stock", stock(state, sale, req).await)
        }
        (["reservations", id, action @ ("confirm" | "release")], Method::POST) => {
            let target = if *action == "confirm" {
                ReservationState::Confirmed
            } else {
                ReservationState::Released
            };
            ("admin_settle", settle_reservation(state, id, target).await)
        }
        _ => (
            "admin",
            Err(ApiError::NotFound(format!(
                "/admin/v1/{}",
                rest.chars().take(96).collect::<String>()
            ))),
        ),
    }
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
fn status(state: &AppState) -> Response<Body> {
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

async fn set_status(
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
    state.store.set_status(&room.id, status).await?;
    tracing::info!(room = %room.id, state = status.as_str(), "room state changed by operator");
    if status == RoomStatus::Paused {
        state.webhooks.emit(
            WebhookEvent::RoomPaused,
            format!("room.paused:{}:{}", room.id, now_ms()),
            json!({ "room": room.id.as_str() }),
        );
    }
    Ok(json(
        StatusCode::OK,
        &json!({ "room": room.id.as_str(), "state": status.as_str() }),
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
async fn settings(
    state: &AppState,
    room: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room)?;
    let (parts, body) = req.into_parts();
    let body: SettingsBody = parse_json(&read_limited(&parts.headers, body).await?)?;
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
    state
        .store
        .set_settings(&room.id, body.admit_per_minute, body.max_active)
        .await?;
    tracing::info!(room = %room.id, admit_per_minute = ?body.admit_per_minute, max_active = ?body.max_active, "room settings changed by operator");
    Ok(json(
        StatusCode::OK,
        &json!({
            "room": room.id.as_str(),
            "admit_per_minute": body.admit_per_minute,
            "max_active": body.max_active,
        }),
    ))
}

/// `GET /admin/v1/sales/{sale}`: counters read from the store now.
async fn sale_stats(state: &AppState, sale: &str) -> Result<Response<Body>, ApiError> {
    let sale = state.sale(sale)?;
    let s = state.sale_store.sale_state(&sale.config.id).await?;
    let events = state.sale_store.order_events(&sale.config.id).await?;
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
async fn stock(
    state: &AppState,
    sale: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let sale = state.sale(sale)?;
    let (parts, body) = req.into_parts();
    let body: StockBody = parse_json(&read_limited(&parts.headers, body).await?)?;
    if body.units == 0 {
        return Err(ApiError::InvalidField {
            field: "units",
            problem: "must not be 0",
        });
    }
    let (applied, available) = state
        .sale_store
        .add_stock(&sale.config.id, body.units, now_ms())
        .await?;
    tracing::info!(sale = %sale.config.id, applied, available, "stock changed by operator");
    Ok(json(
        StatusCode::OK,
        &json!({ "sale": sale.config.id, "applied": applied, "available": available }),
    ))
}

/// `POST /admin/v1/reload`: 200 with what changed, or 422 listing every problem (the running
/// configuration stays).
async fn reload(state: &AppState) -> Result<Response<Body>, ApiError> {
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
