//! Gate mode for shops that keep their own nginx or Envoy: one question, "does this request
//! carry a valid pass for the room?", answered locally from the pass signature (no store call).

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::forward::PASS_HEADER;
use crate::http::body::{full, Body};
use crate::http::credentials::{bearer, cookie, pass_cookie};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// `ANY {prefix}/v1/rooms/{room}/gate`: `204` with the pass echoed in `Rushgate-Pass` when the
/// bearer token or the `rg_pass_{room}` cookie is a valid pass of the room; otherwise `401`
/// (`not-admitted`). Never a 5xx for "not admitted": nginx `auth_request` understands only
/// 2xx/401/403 and Envoy `ext_authz` in fail-open mode lets 5xx through. Any method is accepted
/// because both proxies send the original request's method.
pub fn gate(
    state: &AppState,
    room_id: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let room = state.room(room_id)?;
    let cookie_name = pass_cookie(&room.id);
    let mut reason = format!("no pass (cookie `{cookie_name}` or Authorization: Bearer)");
    for token in [bearer(headers), cookie(headers, &cookie_name)]
        .into_iter()
        .flatten()
    {
        match state.places().check_pass(room, token) {
            Ok(_) => {
                let mut resp = Response::new(full(""));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                let h = resp.headers_mut();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if let Ok(v) = HeaderValue::from_str(token) {
                    h.insert(PASS_HEADER, v);
                }
                return Ok(resp);
            }
            Err(e) => reason = format!("invalid pass: {e}"),
        }
    }
    Err(ApiError::NotAdmitted {
        room: room.id.as_str().to_string(),
        reason,
    })
}
