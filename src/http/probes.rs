//! Admin-listener probes and metrics: `/livez` (the process serves), `/readyz` and its alias
//! `/healthz` (the store answers), `/metrics` (Prometheus text).

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, Body};
use super::json::json;
use crate::http::state::AppState;

/// `GET /livez`: 200 while the process can answer at all.
pub fn livez() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

/// `GET /readyz`: 200 when the store answered its last command, else 503.
pub fn readyz(state: &AppState) -> Response<Body> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        let mut resp = json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "draining", "store": if state.store.healthy() { "ok" } else { "unavailable" } }),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return resp;
    }
    if state.store.healthy() {
        json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "store": "ok" }),
        )
    } else {
        let mut resp = json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "status": "not ready",
                "store": "unavailable",
                "cause": state.store.connection_error(),
            }),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        resp
    }
}

/// `GET /metrics`: Prometheus text. Room and sale gauges are copied from this node's cached
/// state first (memory only: a scrape never waits for the store).
pub fn metrics(state: &AppState) -> Response<Body> {
    for room in state.rooms.iter() {
        room.observe_metrics();
    }
    for sale in state.sales.iter() {
        sale.observe_metrics();
    }
    let mut resp = Response::new(full(state.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
