//! Pass endpoints: the JWKS that shops validate passes with, and server-side verification for
//! shops that cannot do JWT themselves.

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::body::{full, Body};
use super::error::ApiError;
use super::json::{json, parse_json, read_limited};
use crate::http::state::AppState;

/// `GET /.well-known/jwks.json`
pub fn jwks(state: &AppState) -> Response<Body> {
    let mut resp = Response::new(full(state.passes.keys().jwks_json()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

#[derive(Deserialize)]
struct VerifyBody {
    token: String,
}

/// `POST {prefix}/v1/passes/verify`: `{"token"}` → `{"valid": true, "claims": {...}}`, or a
/// 401 problem naming why the pass is not valid.
pub async fn verify(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_limited(&parts, body).await?;
    let body: VerifyBody = parse_json(&bytes)?;
    let claims = state
        .passes
        .verify(&body.token)
        .map_err(ApiError::BadPass)?;
    // A pass whose session ended or whose place moved is no longer valid, on every node from
    // its next refresh.
    if let Some(room) = state.rooms.get(&claims.room) {
        if room.revoked.refuses(&claims) {
            return Err(ApiError::BadPass(crate::pass::TokenError::Revoked));
        }
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "valid": true, "claims": &*claims }),
    ))
}
