//! Coupon codes: derived from the campaign and the serial with an HMAC keyed by the ticket
//! secret, so a repeat claim returns the same code without storing it, the issued set can be
//! rebuilt from the log (serial, user), and codes cannot be guessed from serials.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Campaign;
use crate::config::WebhookEvent;
use crate::store::sale::{CouponOutcome, SaleStore};
use crate::store::StoreError;
use crate::webhooks::Webhooks;

/// A coupon held by a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    /// Its serial (1 = first issued).
    pub serial: u64,
    /// Its code ([`code`]).
    pub code: String,
    /// Whether this claim issued it (false: the user's earlier coupon, returned again).
    pub created: bool,
}

/// Claims a coupon of `campaign` for `user` (`user_id`: the shop's user id for the log, when
/// the shop vouched for the shopper): first come, one per user, at most `limit` issued (one
/// atomic store operation). `None` once the campaign is exhausted. Issuing the last one
/// emits `coupon.exhausted`.
pub async fn claim(
    store: &dyn SaleStore,
    webhooks: &Webhooks,
    campaign: &Campaign,
    user: &str,
    user_id: Option<&str>,
    secret: &[u8],
    now: u64,
) -> Result<Option<Coupon>, StoreError> {
    let (serial, created) = match store
        .claim_coupon(
            &campaign.id,
            user,
            user_id.unwrap_or(""),
            campaign.config.limit,
            now,
        )
        .await?
    {
        CouponOutcome::New(serial) => {
            if serial == campaign.config.limit {
                webhooks.emit(
                    WebhookEvent::CouponExhausted,
                    format!("coupon.exhausted:{}", campaign.id),
                    serde_json::json!({ "campaign": campaign.id.as_str(), "limit": campaign.config.limit }),
                );
            }
            metrics::counter!("rushgate_coupons_issued_total", "campaign" => campaign.id.to_string())
                .increment(1);
            (serial, true)
        }
        CouponOutcome::Existing(serial) => (serial, false),
        CouponOutcome::Exhausted => return Ok(None),
    };
    Ok(Some(Coupon {
        serial,
        code: code(secret, campaign.id.as_str(), serial),
        created,
    }))
}

/// Characters of a code's random part (Crockford base32: no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The code of coupon `serial` of `campaign`: `CAMPAIGN-XXXXXXXXXX` (10 base32 characters,
/// 50 bits). Deterministic for a given secret.
pub fn code(secret: &[u8], campaign: &str, serial: u64) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return format!("{}-{serial}", campaign.to_uppercase()),
    };
    mac.update(b"coupon:");
    mac.update(campaign.as_bytes());
    mac.update(b":");
    mac.update(&serial.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut bits = u64::from_be_bytes([
        tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7],
    ]);
    let mut out = format!("{}-", campaign.to_uppercase());
    for _ in 0..10 {
        out.push(char::from(ALPHABET[(bits & 31) as usize]));
        bits >>= 5;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_distinct_and_keyed() {
        let a = code(b"secret-1", "welcome10", 1);
        assert_eq!(a, code(b"secret-1", "welcome10", 1));
        assert!(a.starts_with("WELCOME10-") && a.len() == "WELCOME10-".len() + 10);
        assert_ne!(a, code(b"secret-1", "welcome10", 2));
        assert_ne!(a, code(b"secret-2", "welcome10", 1));
        let all: std::collections::HashSet<String> = (1..=10_000)
            .map(|s| code(b"secret-1", "welcome10", s))
            .collect();
        assert_eq!(all.len(), 10_000);
    }
}
