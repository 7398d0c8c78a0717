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

use super::body::{
    bearer, bearer_is, cookie, json, parse_json, parse_optional_json, read_limited, Body,
};
use super::error::ApiError;
use crate::app::AppState;
use crate::clock::now_ms;
use crate::pass::PassClaims;
use crate::sale::{coupon, Sale};
use crate::store::sale::{CouponOutcome, PurchaseOutcome, Reservation, ReservationState};

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
    let cookie_name = format!("rg_pass_{room}");
    let token = bearer(headers)
        .or_else(|| cookie(headers, &cookie_name))
        .ok_or(ApiError::MissingPass(cookie_name))?;
    let claims = state.passes.verify(token).map_err(ApiError::BadPass)?;
    if claims.room != room {
        return Err(ApiError::PassWrongRoom {
            held: claims.room.chars().take(64).collect(),
            wanted: room.to_string(),
        });
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
    let sale = sale_or_404(state, sale_id)?;
    let (parts, body) = req.into_parts();
    let claims = require_pass(state, &sale.config.room, &parts.headers)?;
    let bytes = read_limited(&parts.headers, body).await?;
    let body: PurchaseBody = parse_json(&bytes)?;
    let qty = quantity(body.quantity.as_ref())?;
    let idem = idempotency_key(body.idempotency_key.as_deref())?;
    // A keyed purchase's reservation is named from its key by the store; only one without a
    // key needs a fresh random id.
    let new_id = if idem.is_empty() {
        format!("{}.{}", sale.config.id, uuid::Uuid::new_v4().simple())
    } else {
        String::new()
    };
    let outcome = state
        .sale_store
        .purchase(
            &sale.config.id,
            &claims.sub,
            qty,
            idem,
            &sale.params,
            &new_id,
            now_ms(),
        )
        .await?;
    sale.count_purchase(outcome.label());
    match outcome {
        PurchaseOutcome::Reserved(r) => {
            if let Some(room) = state.rooms.get(&sale.config.room) {
                room.note_sold(r.available, sale.admit_cap_for(r.available));
                // The buyer stops counting against the stock-aware admission cap once the
                // pacer records it (batched, before its next tick): no extra store round trip.
                room.note_buyer(&claims.sub);
            }
            Ok(json(
                StatusCode::CREATED,
                &reservation_body(&sale.config.id, &r),
            ))
        }
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

/// The configured sale `id`, or 404 naming it.
pub(crate) fn sale_or_404<'a>(state: &'a AppState, id: &str) -> Result<&'a Arc<Sale>, ApiError> {
    state
        .sales
        .get(id)
        .ok_or_else(|| ApiError::UnknownSale(id.chars().take(64).collect()))
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
    let sale = reservation
        .split_once('.')
        .and_then(|(sale, _)| state.sales.get(sale))
        .ok_or_else(unknown)?;
    let outcome = state
        .sale_store
        .settle(&sale.config.id, reservation, target, now_ms())
        .await?;
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
    let user = match &campaign.room {
        Some(room) => require_pass(state, room, &parts.headers)?.sub.clone(),
        None => {
            let bytes = read_limited(&parts.headers, body).await?;
            let body: ClaimBody = parse_optional_json(&bytes)?;
            let user = body.user.as_deref().map(str::trim).unwrap_or("");
            if user.is_empty() || user.len() > MAX_KEY_LEN {
                return Err(ApiError::InvalidField {
                    field: "user",
                    problem: "required (1 to 256 bytes) for a campaign without a room",
                });
            }
            state.tickets.user_identity(user)
        }
    };
    let outcome = state
        .sale_store
        .claim_coupon(&campaign.id, &user, campaign.limit, now_ms())
        .await?;
    let (status, serial) = match outcome {
        CouponOutcome::New(serial) => {
            if serial == campaign.limit {
                state.webhooks.emit(
                    "coupon.exhausted",
                    format!("coupon.exhausted:{}", campaign.id),
                    serde_json::json!({ "campaign": campaign.id, "limit": campaign.limit }),
                );
            }
            metrics::counter!("rushgate_coupons_issued_total", "campaign" => campaign.id.clone())
                .increment(1);
            (StatusCode::CREATED, serial)
        }
        CouponOutcome::Existing(serial) => (StatusCode::OK, serial),
        CouponOutcome::Exhausted => return Err(ApiError::CouponExhausted),
    };
    let code = coupon::code(
        state.config.passes.ticket_secret.0.as_bytes(),
        &campaign.id,
        serial,
    );
    Ok(json(
        status,
        &serde_json::json!({ "campaign": campaign.id, "code": code, "serial": serial }),
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
