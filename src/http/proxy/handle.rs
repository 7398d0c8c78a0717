//! One request outside the API prefix: decided by the rooms' rules, then forwarded (with the
//! pass the shopper holds, checked locally), or sent to the queue, or 404 when no room proxies.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::forward::{Forwarding, SESSION_HEADER};
use super::{demo, rules, tunnel, waiting, Decision, Route, Upstream, MAX_HEADER_BYTES};
use crate::clock::now_ms;
use crate::http::body::Body;
use crate::http::credentials::{cookie, PeerAddr};
use crate::http::error::ApiError;
use crate::http::place::cleared_pass_cookie;
use crate::http::state::AppState;
use crate::ops::request_id::RequestId;
use crate::pass::PassClaims;

/// Handles a request outside the API prefix: forward, queue, or 404 when no room proxies.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    // The path is judged in its canonical form, and exactly that form is what the shop gets.
    let path = rules::canonical(req.uri().path(), true).map_err(ApiError::AmbiguousPath)?;
    let decision = state.proxy.decide(&path);
    if let Decision::Forward(route) | Decision::Protected(route) = &decision {
        // Judged on the path as sent: a `;` segment that dot segments remove (`/;/..`) was
        // still a path parameter the client wrote.
        if !route.parameters && req.uri().path().contains(';') {
            return Err(ApiError::AmbiguousPath(rules::PathRefused::PathParameter));
        }
    }
    let mut req = req;
    if req.uri().path() != path {
        let canonical = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        let pq = http::uri::PathAndQuery::try_from(canonical.as_str())
            .map_err(|_| ApiError::AmbiguousPath(rules::PathRefused::Control))?;
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq);
        *req.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|_| ApiError::AmbiguousPath(rules::PathRefused::Control))?;
    }
    match decision {
        Decision::Nowhere => Err(ApiError::NotFound(path.chars().take(128).collect())),
        Decision::Forward(route) => {
            // The shop may end a session from an unprotected page too (a /logout): the pass
            // cookie is read now and checked only if the answer asks.
            let pass = cookie(req.headers(), &route.pass_cookie).map(str::to_string);
            let mut resp = send(state, route, req, None).await?;
            if resp.headers().contains_key(SESSION_HEADER) {
                let claims = pass.as_deref().and_then(|token| {
                    let room = state.rooms.get(&route.room)?;
                    state.places().check_pass(room, token).ok()
                });
                match claims {
                    Some(claims) => end_if_asked(state, route, &claims, &mut resp),
                    None => {
                        resp.headers_mut().remove(SESSION_HEADER);
                    }
                }
            }
            Ok(resp)
        }
        Decision::Protected(route) => match valid_pass(state, route, req.headers()) {
            Some(pass) => {
                let claims = pass.1.clone();
                let mut resp = send(state, route, req, Some(pass)).await?;
                end_if_asked(state, route, &claims, &mut resp);
                Ok(resp)
            }
            None if tunnel::is_upgrade(req.headers()) && !wants_page(req.headers()) => {
                // A WebSocket cannot show a waiting page: the page that opens it queues.
                Err(ApiError::MissingPass(route.pass_cookie.clone()))
            }
            None => {
                let return_to = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .filter(|u| waiting::is_local_path(u))
                    .unwrap_or("/")
                    .to_string();
                let peer = req.extensions().get::<PeerAddr>().copied();
                waiting::admit_or_wait(state, &route.room, req.headers(), peer, &return_to).await
            }
        },
    }
}

/// Whether the client asks for an HTML page (a browser navigation).
fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The room's pass cookie when it verifies locally (signature, issuer, audience, time, room)
/// and was not revoked. Returned as the `Rushgate-Pass` value the shop gets, and the claims.
fn valid_pass(
    state: &AppState,
    route: &Route,
    headers: &HeaderMap,
) -> Option<(HeaderValue, Arc<PassClaims>)> {
    let token = cookie(headers, &route.pass_cookie)?;
    let room = state.rooms.get(&route.room)?;
    let claims = state.places().check_pass(room, token).ok()?;
    Some((HeaderValue::from_str(token).ok()?, claims))
}

/// The shop's command to end the shopper's session: a `Rushgate-Session: end` response header
/// on a request that carried a pass. rushgate strips the header, clears the pass cookie in the
/// same response, and ends the session (slot freed, pass revoked on every node) in the
/// background, so the shop's answer is not held up by the store.
fn end_if_asked(state: &AppState, route: &Route, pass: &PassClaims, resp: &mut Response<Body>) {
    let Some(command) = resp.headers_mut().remove(SESSION_HEADER) else {
        return;
    };
    if !command.as_bytes().eq_ignore_ascii_case(b"end") {
        tracing::warn!(room = %route.room, "ignored a Rushgate-Session header other than `end`");
        return;
    }
    if let Some(room) = state.rooms.get(&route.room) {
        if let Some(cookie) = cleared_pass_cookie(room) {
            resp.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
    }
    let (state, room, sub) = (state.clone(), route.room.clone(), pass.sub.clone());
    tokio::spawn(async move {
        let Some(room) = state.rooms.get(&room) else {
            return;
        };
        if let Err(e) = state.places().end_session(room, &sub, now_ms()).await {
            tracing::warn!(room = %room.id, error = %e, "could not end a session the shop ended");
        }
    });
}

async fn send(
    state: &AppState,
    route: &Route,
    req: Request<Incoming>,
    pass: Option<(HeaderValue, Arc<PassClaims>)>,
) -> Result<Response<Body>, ApiError> {
    match &route.upstream {
        Upstream::Demo => demo::serve(state, &route.room, &req, pass.as_ref().map(|(_, c)| &**c)),
        Upstream::Http(target) => {
            let extra = Forwarding {
                peer: req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
                pass: pass.map(|(value, _)| value),
                request_id: req
                    .extensions()
                    .get::<RequestId>()
                    .map(RequestId::header_value),
            };
            if tunnel::is_upgrade(req.headers()) {
                return Box::pin(target.tunnel(req, extra)).await;
            }
            target.forward(req, extra).await
        }
    }
}
