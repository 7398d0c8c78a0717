//! Every route in one place: `public` for the shopper listener, `admin` for the admin listener.
//! Handlers return `Result<_, ApiError>`; this is where errors become problem responses.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tracing::Instrument;

use super::body::Body;
use super::credentials::PeerAddr;
use super::credentials::{bearer, cookie, pass_cookie, ticket_cookie};
use super::error::ApiError;
use super::limits::Endpoint;
use super::{admin, cors, events, pass, pow, probes, queue, sale};
use crate::http::state::AppState;
use crate::ops::logging::REQUEST_TARGET;
use crate::ops::request_id::{self, RequestId};
use crate::store::sale::ReservationState;

/// Routes a request of the public listener. The request id is in the request's extensions
/// (handlers and the proxy read it there) and every log event of the handler carries it.
pub async fn public(state: Arc<AppState>, mut req: Request<Incoming>) -> Response<Body> {
    let started = Started::of(&req);
    req.extensions_mut().insert(started.id.clone());
    // The same test as routing: the prefix, then nothing or `/` (`/apiv2` is the shop's).
    let api = req
        .uri()
        .path()
        .strip_prefix(state.config.server.api_prefix.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    // Cross-origin calls concern the API only (the shop's pages are the shop's business).
    let server = &state.config.server;
    if api && req.method() == Method::OPTIONS && cors::is_preflight(req.headers()) {
        let answer = cors::preflight(server, req.headers());
        return finish("cors_preflight", started, answer);
    }
    let origin = if api && !server.cors_origins.is_empty() {
        req.headers().get(http::header::ORIGIN).cloned()
    } else {
        None
    };
    // A browser asking for a shop page (not the API) gets errors as an HTML page, not JSON.
    let page = !api
        && req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    let span = tracing::info_span!("request", request_id = %started.id);
    let (route, result) = route_public(&state, req).instrument(span).await;
    let result = match result {
        Err(e) if page => Ok(e.into_page(Some(started.id.as_str()))),
        other => other,
    };
    let mut resp = finish(route, started, result);
    cors::decorate(&state.config.server, origin.as_ref(), &mut resp);
    resp
}

/// Routes a request of the admin listener.
pub async fn admin(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Started::of(&req);
    let path = req.uri().path().to_string();
    let (route, result) = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/livez") => ("livez", Ok(probes::livez())),
        (Method::GET, "/readyz" | "/healthz") => ("readyz", Ok(probes::readyz(&state))),
        (Method::GET, "/metrics") => ("metrics", Ok(probes::metrics(&state))),
        (_, p) if p.starts_with("/admin/v1/") => {
            route_admin(&state, &p["/admin/v1/".len()..], req).await
        }
        (_, p) => ("unknown", Err(ApiError::NotFound(truncate(p)))),
    };
    finish(route, started, result)
}

/// Routes `/admin/v1/...` (`rest` is the part after `/admin/v1/`). Returns the route label
/// for metrics with the result.
async fn route_admin(
    state: &AppState,
    rest: &str,
    req: Request<Incoming>,
) -> (&'static str, Result<Response<Body>, ApiError>) {
    if let Err(e) = admin::authorize(state, req.headers()) {
        return ("admin", Err(e));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["status"], Method::GET) => ("admin_status", Ok(admin::status(state))),
        (["reload"], Method::POST) => ("admin_reload", admin::reload(state).await),
        (["rooms", room], Method::GET) => ("admin_room", admin::room(state, room)),
        (
            ["rooms", room, action @ ("pause" | "resume" | "open" | "close" | "drain")],
            Method::POST,
        ) => (
            "admin_room_state",
            admin::set_status(state, room, action).await,
        ),
        (["rooms", room, "sessions", sub, "end"], Method::POST) => (
            "admin_end_session",
            admin::end_session(state, room, sub).await,
        ),
        (["rooms", room, "message"], Method::POST) => {
            ("admin_room_message", admin::message(state, room, req).await)
        }
        (["rooms", room, "settings"], Method::POST) => (
            "admin_room_settings",
            admin::settings(state, room, req).await,
        ),
        (["sales", sale], Method::GET) => ("admin_sale", admin::sale_stats(state, sale).await),
        (["sales", sale, "stock"], Method::POST) => {
            ("admin_sale_stock", admin::stock(state, sale, req).await)
        }
        (["reservations", id, action @ ("confirm" | "release")], Method::POST) => {
            let target = if *action == "confirm" {
                ReservationState::Confirmed
            } else {
                ReservationState::Released
            };
            (
                "admin_settle",
                sale::settle_reservation(state, id, target).await,
            )
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
    let Some(under_api) = path
        .strip_prefix(state.config.server.api_prefix.as_str())
        .filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        // Everything outside the API belongs to the shop: forward it, or queue the shopper.
        // Boxed, as are join and purchase: hyper moves each request's future whole, and inline
        // these made every request's future 6 KB (3 KB with the proxy boxed, 2.4 KB now); the
        // copies showed as ~2.5% of a purchase's CPU in `perf`.
        return (
            "proxy",
            Box::pin(crate::http::proxy::handle(state, req)).await,
        );
    };
    let Some(rest) = under_api.strip_prefix("/v1/") else {
        return ("unknown", Err(ApiError::NotFound(truncate(&path))));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (segments.as_slice(), method) {
        (["rooms", room], Method::GET) => ("room_status", queue::status(state, room)),
        (["rooms", room, "join"], Method::POST) => (
            "join",
            async {
                limited(state, &req, Endpoint::Join, ticket_cookie(room))?;
                Box::pin(queue::join(state, room, req)).await
            }
            .await,
        ),
        (["rooms", room, "position"], Method::GET) => (
            "position",
            async {
                limited(state, &req, Endpoint::Poll, ticket_cookie(room))?;
                queue::position(state, room, &req).await
            }
            .await,
        ),
        (["rooms", room, "events"], Method::GET) => (
            "events",
            async {
                limited(state, &req, Endpoint::Poll, ticket_cookie(room))?;
                events::events(state, room, &req).await
            }
            .await,
        ),
        (["rooms", room, "leave"], Method::POST) => {
            ("leave", queue::leave(state, room, &req).await)
        }
        (["rooms", room, "transfer"], Method::POST) => (
            "transfer",
            async {
                limited(state, &req, Endpoint::Poll, ticket_cookie(room))?;
                queue::transfer(state, room, req).await
            }
            .await,
        ),
        // Claims are limited like joins, per client address whatever token is sent: guessing
        // codes costs the address's budget.
        (["rooms", room, "claim"], Method::POST) => (
            "claim",
            async {
                state.limits.check(
                    Endpoint::Join,
                    req.headers(),
                    req.extensions().get::<PeerAddr>().copied(),
                    None,
                )?;
                queue::claim(state, room, req).await
            }
            .await,
        ),
        (["rooms", room, "claim"], Method::GET) => {
            ("claim_page", queue::claim_page(state, room, req.uri()))
        }
        (["rooms", room, "gate"], _) => {
            ("gate", crate::http::proxy::gate(state, room, req.headers()))
        }
        (["rooms", room, "wait"], _) => ("wait", crate::http::proxy::wait(state, room, &req).await),
        (["passes", "verify"], Method::POST) => ("pass_verify", pass::verify(state, req).await),
        (["pow", "worker.js"], Method::GET | Method::HEAD) => ("pow_worker", Ok(pow::worker())),
        (["sales", sale, "purchase"], Method::POST) => (
            "purchase",
            async {
                let room = state.sales.get(sale).map(|s| s.config.room.as_str());
                limited(
                    state,
                    &req,
                    Endpoint::Purchase,
                    pass_cookie(room.unwrap_or("")),
                )?;
                Box::pin(sale::purchase(state, sale, req)).await
            }
            .await,
        ),
        (["reservations", id, "confirm"], Method::POST) => (
            "confirm",
            sale::settle(state, id, ReservationState::Confirmed, req.headers()).await,
        ),
        (["reservations", id, "release"], Method::POST) => (
            "release",
            sale::settle(state, id, ReservationState::Released, req.headers()).await,
        ),
        (["coupons", id, "claim"], Method::POST) => (
            "coupon_claim",
            async {
                let room = state.coupons.get(id).and_then(|c| c.config.room.as_deref());
                limited(
                    state,
                    &req,
                    Endpoint::Coupon,
                    pass_cookie(room.unwrap_or("")),
                )?;
                sale::claim_coupon(state, id, req).await
            }
            .await,
        ),
        (["rooms", _], _)
        | (["rooms", _, "position" | "events"], _)
        | (["pow", "worker.js"], _) => ("method", Err(not_allowed(&req, "GET"))),
        (["rooms", _, "join" | "leave" | "transfer"], _)
        | (["passes", "verify"], _)
        | (["sales", _, "purchase"], _)
        | (["reservations", _, "confirm" | "release"], _)
        | (["coupons", _, "claim"], _) => ("method", Err(not_allowed(&req, "POST"))),
        _ => ("unknown", Err(ApiError::NotFound(truncate(&path)))),
    }
}

/// Takes one request from the client's budget: keyed by the bearer token or the named cookie
/// when presented, else by client IP.
fn limited(
    state: &AppState,
    req: &Request<Incoming>,
    endpoint: Endpoint,
    cookie_name: String,
) -> Result<(), ApiError> {
    let headers = req.headers();
    let token = bearer(headers).or_else(|| cookie(headers, &cookie_name));
    state.limits.check(
        endpoint,
        headers,
        req.extensions().get::<PeerAddr>().copied(),
        token,
    )
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

/// What the request line of the log needs, taken before the handler consumes the request.
struct Started {
    at: Instant,
    id: RequestId,
    method: Method,
    /// Cloning a `Uri` shares its bytes; the path is cut for the log line only if one is written.
    uri: Uri,
}

impl Started {
    fn of<B>(req: &Request<B>) -> Started {
        Started {
            at: Instant::now(),
            id: RequestId::from_headers(req.headers()),
            method: req.method().clone(),
            uri: req.uri().clone(),
        }
    }
}

/// Turns an error into its problem (carrying the request id), sets `X-Request-Id`, records the
/// request metrics and logs the request's one line (probes that succeed log at debug only).
fn finish(
    route: &'static str,
    started: Started,
    result: Result<Response<Body>, ApiError>,
) -> Response<Body> {
    let Started {
        at,
        id,
        method,
        uri,
    } = started;
    let mut resp = result.unwrap_or_else(|e| e.into_problem(Some(id.as_str())));
    resp.headers_mut()
        .insert(request_id::HEADER, id.header_value());
    let elapsed = at.elapsed();
    let status = resp.status().as_u16();
    crate::ops::metrics::record_request(route, status, elapsed.as_secs_f64());
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    // Field values are only evaluated when the event is enabled.
    if matches!(route, "livez" | "readyz" | "metrics") && status < 400 {
        tracing::debug!(target: REQUEST_TARGET, request_id = %id, %method, path = %truncate(uri.path()), route, status, duration_ms, "request");
    } else {
        tracing::info!(target: REQUEST_TARGET, request_id = %id, %method, path = %truncate(uri.path()), route, status, duration_ms, "request");
    }
    resp
}
