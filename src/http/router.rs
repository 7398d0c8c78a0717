//! Every route in one place: `public` for the shopper listener, `admin` for the admin listener.
//! Handlers return `Result<_, ApiError>`; this is where errors become problem responses.

use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::body::Body;
use super::error::ApiError;
use super::{pass, probes, queue, sale};
use crate::app::AppState;
use crate::store::sale::ReservationState;

/// Routes a request of the public listener.
pub async fn public(state: AppState, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (route, result) = route_public(&state, req).await;
    finish(route, started, result)
}

/// Routes a request of the admin listener.
pub async fn admin(state: AppState, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let (route, result) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/livez") => ("livez", Ok(probes::livez())),
        (&Method::GET, "/readyz" | "/healthz") => ("readyz", Ok(probes::readyz(&state))),
        (&Method::GET, "/metrics") => ("metrics", Ok(probes::metrics(&state))),
        (_, path) => ("unknown", Err(ApiError::NotFound(truncate(path)))),
    };
    finish(route, started, result)
}

async fn route_public(
    state: &AppState,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    let path = req.uri().path().to_string();
    if path == "/.well-known/jwks.json" {
        return match *req.method() {
            Method::GET | Method::HEAD => ("jwks", Ok(pass::jwks(state))),
            _ => ("jwks", Err(not_allowed(&req, "GET"))),
        };
    }
    let Some(rest) = path
        .strip_prefix(state.config.server.api_prefix.as_str())
        .and_then(|r| r.strip_prefix("/v1/"))
    else {
        return ("unknown", Err(ApiError::NotFound(truncate(&path))));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["rooms", room], Method::GET) => ("room_status", queue::status(state, room)),
        (["rooms", room, "join"], Method::POST) => ("join", queue::join(state, room, req).await),
        (["rooms", room, "position"], Method::GET) => {
            ("position", queue::position(state, room, &req).await)
        }
        (["rooms", room, "leave"], Method::POST) => {
            ("leave", queue::leave(state, room, &req).await)
        }
        (["passes", "verify"], Method::POST) => ("pass_verify", pass::verify(state, req).await),
        (["sales", sale, "purchase"], Method::POST) => {
            ("purchase", sale::purchase(state, sale, req).await)
        }
        (["reservations", id, "confirm"], Method::POST) => (
            "confirm",
            sale::settle(state, id, ReservationState::Confirmed, req.headers()).await,
        ),
        (["reservations", id, "release"], Method::POST) => (
            "release",
            sale::settle(state, id, ReservationState::Released, req.headers()).await,
        ),
        (["coupons", id, "claim"], Method::POST) => {
            ("coupon_claim", sale::claim_coupon(state, id, req).await)
        }
        (["rooms", _], _) | (["rooms", _, "position"], _) => {
            ("method", Err(not_allowed(&req, "GET")))
        }
        (["rooms", _, "join" | "leave"], _)
        | (["passes", "verify"], _)
        | (["sales", _, "purchase"], _)
        | (["reservations", _, "confirm" | "release"], _)
        | (["coupons", _, "claim"], _) => ("method", Err(not_allowed(&req, "POST"))),
        _ => ("unknown", Err(ApiError::NotFound(truncate(&path)))),
    }
}

fn not_allowed(req: &Request<Incoming>, allow: &'static str) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().as_str().chars().take(16).collect(),
        allow,
    }
}

/// Paths echo into problem details; keep them short.
fn truncate(path: &str) -> String {
    path.chars().take(128).collect()
}

fn finish(
    route: &'static str,
    started: Instant,
    result: Result<Response<Body>, ApiError>,
) -> Response<Body> {
    let resp = result.unwrap_or_else(ApiError::into_response);
    let status = resp.status().as_u16().to_string();
    metrics::counter!("rushgate_http_requests_total", "route" => route, "status" => status.clone())
        .increment(1);
    metrics::histogram!("rushgate_http_request_duration_seconds", "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    resp
}
