//! Sale endpoints: purchase (a reservation taken with an admission pass), confirm and release
//! by the shop backend, and first-come coupon claims.
//!
//! Every rejection happens before the store is asked, or is an outcome of the one atomic
//! script, so a rejected request never changes stock.

use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::Body;
use super::credentials::{bearer_is, pass_cookie, presented_pass};
use super::error::{ApiError, Retry};
use super::json::{json, parse_json, parse_optional_json, read_limited};
use crate::clock::now_ms;
use crate::http::state::AppState;
use crate::id::ReservationId;
use crate::pass::{PassClaims, TokenError};
use crate::queue::place::identify;
use crate::sale::coupon;
use crate::sale::purchase::{self, Order};
use crate::store::sale::{PurchaseOutcome, Reservation, ReservationState};
use crate::store::StoreError;

/// Largest quantity one purchase may ask for (2^31 - 1): anything above is surely a mistake.
const MAX_QUANTITY: u64 = i32::MAX as u64;
/// Longest accepted idempotency key or shop user key.
const MAX_KEY_LEN: usize = 256;

/// The admission pass presented for `room` (bearer first, then the room's pass cookie),
/// verified locally: signature, issuer, audience, time and room.
pub fn require_pass(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
) -> Result<Arc<PassClaims>, ApiError> {
    let token =
        presented_pass(headers, room).ok_or_else(|| ApiError::MissingPass(pass_cookie(room)))?;
    let claims = state.passes.verify(token).map_err(ApiError::BadPass)?;
    if claims.room != room {
        return Err(ApiError::PassWrongRoom {
            held: claims.room.chars().take(64).collect(),
            wanted: room.to_string(),
        });
    }
    // Revoked passes (session ended, place moved) are refused from this node's next refresh.
    if let Some(r) = state.rooms.get(room) {
        if r.revoked.refuses(&claims) {
            return Err(ApiError::BadPass(TokenError::Revoked));
        }
    }
    Ok(claims)
}

/// Body of `purchase`. `quantity` is read as raw JSON so each kind of bad value gets a precise
/// error instead of serde's generic one.
#[derive(Deserialize)]
struct PurchaseBody {
    quantity: Option<Value>,
    idempotency_key: Option<String>,
}

fn quantity(v: Option<&Value>) -> Result<u64, ApiError> {
    let invalid = |problem| ApiError::InvalidField {
        field: "quantity",
        problem,
    };
    match v {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Err(invalid("must be at least 1")),
            Some(q) if q > MAX_QUANTITY => Err(invalid("must be at most 2147483647")),
            Some(q) => Ok(q),
            None if n.as_i64().is_some() => Err(invalid("must be a positive integer")),
            None => Err(invalid("must be a whole number")),
        },
        Some(_) => Err(invalid(
            "must be a JSON integer, not a string or other value",
        )),
    }
}

fn idempotency_key(key: Option<&str>) -> Result<&str, ApiError> {
    let key = key.unwrap_or("");
    if key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::InvalidField {
            field: "idempotency_key",
            problem: "must be at most 256 printable characters",
        });
    }
    Ok(key)
}

/// A reservation as purchase answers it (field names are the API contract).
#[derive(Serialize)]
struct ReservationBody<'a> {
    reservation_id: &'a str,
    sale: &'a str,
    quantity: u64,
    state: &'static str,
    expires_at: u64,
    remaining: u64,
}

fn reservation_body<'a>(sale: &'a str, r: &'a Reservation) -> ReservationBody<'a> {
    ReservationBody {
        reservation_id: &r.id,
        sale,
        quantity: r.quantity,
        state: r.state.as_str(),
        expires_at: r.expires_ms / 1000,
        remaining: r.available,
    }
}

/// `POST {prefix}/v1/sales/{sale}/purchase`: 201 with a new reservation, 200 with the same one
/// for a repeated idempotency key.
pub async fn purchase(
    state: &AppState,
    sale_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let sale = state.sale(sale_id)?;
    let (parts, body) = req.into_parts();
    let claims = require_pass(state, &sale.config.room, &parts.headers)?;
    let bytes = read_limited(&parts, body).await?;
    let body: PurchaseBody = parse_json(&bytes)?;
    let qty = quantity(body.quantity.as_ref())?;
    let idem = idempotency_key(body.idempotency_key.as_deref())?;
    let order = Order {
        buyer: &claims.sub,
        user_id: claims.uid.as_deref(),
        quantity: qty,
        idempotency_key: idem,
    };
    let room = state.rooms.get(&sale.config.room).map(|r| &**r);
    let outcome = purchase::purchase(&*state.sale_store, sale, room, order, now_ms())
        .await
        .map_err(|u| match u.error {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(Retry::WithKey {
                idempotency_key: u.idempotency_key,
                reservation_id: u.reservation_id,
            }),
            other => other.into(),
        })?;
    match outcome {
        PurchaseOutcome::Reserved(r) => Ok(json(
            StatusCode::CREATED,
            &reservation_body(&sale.config.id, &r),
        )),
        PurchaseOutcome::Existing(r) => {
            Ok(json(StatusCode::OK, &reservation_body(&sale.config.id, &r)))
        }
        PurchaseOutcome::LimitReached { held } => Err(ApiError::LimitReached {
            limit: sale.config.per_user_limit,
            held,
        }),
        PurchaseOutcome::SoldOut { reserved } => Err(ApiError::SoldOut { reserved }),
        PurchaseOutcome::Insufficient { available } => {
            Err(ApiError::InsufficientStock { available })
        }
    }
}

/// Checks `Authorization: Bearer <shop.api_key>` in constant time.
fn require_shop_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer_is(headers, &state.config.shop.api_key.0) {
        Ok(())
    } else {
        Err(ApiError::ShopUnauthorized)
    }
}

/// `POST {prefix}/v1/reservations/{id}/confirm` and `.../release`, by the shop backend.
/// Retrying a transition that was made answers 200 with the same state; a reservation in
/// another final state answers 409 naming it.
pub async fn settle(
    state: &AppState,
    reservation: &str,
    target: ReservationState,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    require_shop_key(state, headers)?;
    settle_reservation(state, reservation, target).await
}

/// Moves a reservation to `target` once the caller is authorized (shop key or admin token).
pub async fn settle_reservation(
    state: &AppState,
    reservation: &str,
    target: ReservationState,
) -> Result<Response<Body>, ApiError> {
    let unknown = || ApiError::UnknownReservation(reservation.chars().take(128).collect());
    // A malformed id names no reservation: the same 404 as an unknown one.
    let id = ReservationId::parse(reservation).ok_or_else(unknown)?;
    let sale = state.sales.of_reservation(&id).ok_or_else(unknown)?;
    let outcome = purchase::settle(&*state.sale_store, sale, &id, target, now_ms()).await?;
    use crate::store::sale::SettleOutcome::*;
    let (status, reached) = match outcome {
        Done(s) => (StatusCode::OK, s),
        Already(s) => (StatusCode::OK, s),
        Conflict(s) => return Err(ApiError::ReservationConflict(s.as_str())),
        Unknown => return Err(unknown()),
    };
    Ok(json(
        status,
        &serde_json::json!({
            "reservation_id": reservation,
            "sale": sale.config.id,
            "state": reached.as_str(),
            "changed": matches!(outcome, Done(_)),
        }),
    ))
}

#[derive(Default, Deserialize)]
struct ClaimBody {
    user: Option<String>,
    user_token: Option<String>,
}

/// `POST {prefix}/v1/coupons/{id}/claim`: 201 with a new coupon, 200 with the same coupon for
/// a repeat claim by the same user, 409 `coupon-exhausted` once `limit` are issued.
pub async fn claim_coupon(
    state: &AppState,
    campaign_id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let campaign = state
        .coupons
        .get(campaign_id)
        .ok_or_else(|| ApiError::UnknownCoupon(campaign_id.chars().take(64).collect()))?;
    let (parts, body) = req.into_parts();
    let now = now_ms();
    let (user, user_id) = match &campaign.config.room {
        Some(room) => {
            let pass = require_pass(state, room, &parts.headers)?;
            (pass.sub.clone(), pass.uid.clone())
        }
        None => {
            let bytes = read_limited(&parts, body).await?;
            let body: ClaimBody = parse_optional_json(&bytes)?;
            let user = body.user.as_deref().map(str::trim);
            if user.is_some_and(|u| u.is_empty() || u.len() > MAX_KEY_LEN) {
                return Err(ApiError::InvalidField {
                    field: "user",
                    problem: "must be 1 to 256 bytes",
                });
            }
            // The same rule as a join: with an [identity] key only a user token says who.
            let shopper = identify(
                state.user_tokens.as_ref(),
                &state.tickets,
                user,
                body.user_token.as_deref(),
                now / 1000,
            )
            .await?
            .ok_or(ApiError::InvalidField {
                field: "user",
                problem: "required (1 to 256 bytes, or `user_token`) for a campaign without a room",
            })?;
            (
                shopper.id.to_string(),
                shopper.uid.map(|u| u.as_str().to_string()),
            )
        }
    };
    let secret = state.config.passes.ticket_secret.0.as_bytes();
    let coupon = coupon::claim(
        &*state.sale_store,
        &state.webhooks,
        campaign,
        &user,
        user_id.as_deref(),
        secret,
        now,
    )
    .await?
    .ok_or(ApiError::CouponExhausted)?;
    let status = if coupon.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        &serde_json::json!({ "campaign": campaign.id.as_str(), "code": coupon.code, "serial": coupon.serial }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_accepts_only_positive_integers_in_range() {
        let q = |s: &str| {
            quantity(Some(
                &serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
            ))
        };
        assert_eq!(q("1").ok(), Some(1));
        assert_eq!(q("2147483647").ok(), Some(2_147_483_647));
        for bad in [
            "0",
            "-1",
            "1.5",
            "\"2\"",
            "2147483648",
            "true",
            "[1]",
            "1e3",
        ] {
            assert!(q(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(quantity(None).ok(), Some(1));
    }
}
