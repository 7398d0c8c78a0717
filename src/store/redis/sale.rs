//! Redis side of the sale store: each operation is one script from `lua/`, run by EVALSHA.

use std::sync::LazyLock;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::batch::PurchaseCall;
use super::reply::{array, int, text};
use super::RedisStore;
use crate::id::{CampaignId, SaleId};
use crate::store::keys::sale_key as key;
use crate::store::sale::{
    purchase_reservation_id, CouponOutcome, PurchaseOutcome, Reservation, ReservationState,
    SaleParams, SaleState, SaleStore, SettleOutcome, StreamEntry,
};
use crate::store::StoreError;

struct SaleScripts {
    init: Script,
    state: Script,
    purchase: Script,
    settle: Script,
    sweep: Script,
    add_stock: Script,
    claim_coupon: Script,
}

static SCRIPTS: LazyLock<SaleScripts> = LazyLock::new(|| SaleScripts {
    init: Script::from_lua(include_str!("lua/sale_init.lua")),
    state: Script::from_lua(include_str!("lua/sale_state.lua")),
    purchase: Script::from_lua(include_str!("lua/purchase.lua")),
    settle: Script::from_lua(include_str!("lua/settle.lua")),
    sweep: Script::from_lua(include_str!("lua/sweep.lua")),
    add_stock: Script::from_lua(include_str!("lua/add_stock.lua")),
    claim_coupon: Script::from_lua(include_str!("lua/claim_coupon.lua")),
});

/// stock, buyers, rsv, rsv_exp, orders: the keys purchase.lua, settle.lua and sweep.lua take.
fn settle_keys(sale: &str) -> Vec<String> {
    ["stock", "buyers", "rsv", "rsv_exp", "orders"]
        .iter()
        .map(|n| key(sale, n))
        .collect()
}

fn state_of(v: &Value) -> Result<ReservationState, StoreError> {
    ReservationState::parse(text(v, "reservation state")?)
        .ok_or_else(|| StoreError::Protocol("unknown reservation state".into()))
}

impl RedisStore {
    /// One purchase.lua run for every call of the batch, with the newest call's rules and time.
    async fn purchase_batch(
        &self,
        sale: &str,
        calls: Vec<PurchaseCall>,
    ) -> Result<Vec<Result<PurchaseOutcome, StoreError>>, StoreError> {
        let Some(params) = calls.last().map(|c| c.params) else {
            return Ok(Vec::new());
        };
        let now = calls.iter().map(|c| c.now).max().unwrap_or_default();
        let keys = settle_keys(sale);
        let n = calls.len();
        let expires = now.saturating_add(params.reservation_ms);
        let mut args = Vec::with_capacity(3 + 5 * n);
        args.extend([
            now.to_string(),
            expires.to_string(),
            params.per_user_limit.to_string(),
        ]);
        let mut asked = Vec::with_capacity(n);
        for c in calls {
            let keyed = if c.keyed { "1" } else { "" };
            args.extend([c.user, c.quantity.to_string(), keyed.to_string()]);
            asked.push((c.id.clone(), c.quantity));
            args.push(c.id);
            args.push(c.user_id);
        }
        let replies = array(
            self.eval_acked(&SCRIPTS.purchase, keys, args).await?,
            3 * n,
            "purchase replies",
        )?;
        Ok(replies
            .chunks(3)
            .zip(asked)
            .map(|(reply, (id, quantity))| purchase_outcome(reply, id, quantity, expires))
            .collect())
    }
}

/// One purchase's reply in a purchase.lua batch: kind, number, text (see the script). A new
/// reservation is the call's own `id` and `quantity`, expiring at the batch's `expires`.
fn purchase_outcome(
    reply: &[Value],
    id: String,
    quantity: u64,
    expires: u64,
) -> Result<PurchaseOutcome, StoreError> {
    let [kind, number, extra] = reply else {
        return Err(StoreError::Protocol("purchase reply".into()));
    };
    let number = int(number, "purchase reply number")?;
    match text(kind, "purchase outcome")? {
        "reserved" => Ok(PurchaseOutcome::Reserved(Reservation {
            id,
            quantity,
            expires_ms: expires,
            available: number,
            state: ReservationState::Reserved,
        })),
        "existing" => existing_reservation(id, text(extra, "existing reservation")?, number)
            .map(PurchaseOutcome::Existing),
        "limit" => Ok(PurchaseOutcome::LimitReached { held: number }),
        "sold_out" => Ok(PurchaseOutcome::SoldOut { reserved: number }),
        "insufficient" => Ok(PurchaseOutcome::Insufficient { available: number }),
        "bad_quantity" => Err(StoreError::Protocol(
            "quantity must be a positive integer".into(),
        )),
        other => Err(StoreError::Protocol(format!("purchase outcome {other}"))),
    }
}

/// Reservation `id` found by a repeated idempotency key, from its record
/// `state|user|quantity|expires_ms` (quantity and expiry read from the right, so a `|` in a
/// user id cannot shift them).
fn existing_reservation(id: String, text: &str, available: u64) -> Result<Reservation, StoreError> {
    let bad = || StoreError::Protocol("existing reservation record".into());
    let mut right = text.rsplitn(3, '|');
    let expires_ms = right.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let quantity = right.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let state = right
        .next()
        .and_then(|rest| rest.split('|').next())
        .and_then(ReservationState::parse);
    Ok(Reservation {
        id,
        quantity,
        expires_ms,
        available,
        state: state.ok_or_else(|| StoreError::Protocol("unknown reservation state".into()))?,
    })
}

#[async_trait]
impl SaleStore for RedisStore {
    async fn init_sale(&self, sale: &SaleId, stock: u64) -> Result<bool, StoreError> {
        let sale = sale.as_str();
        let v = self
            .eval(
                &SCRIPTS.init,
                vec![key(sale, "stock")],
                vec![stock.to_string()],
            )
            .await?;
        Ok(int(&v, "sale init")? == 1)
    }

    async fn sale_state(&self, sale: &SaleId) -> Result<SaleState, StoreError> {
        let sale = sale.as_str();
        let v = array(
            self.eval(&SCRIPTS.state, vec![key(sale, "stock")], vec![])
                .await?,
            5,
            "sale state",
        )?;
        Ok(SaleState {
            available: int(&v[0], "available")?,
            reserved: int(&v[1], "reserved")?,
            confirmed: int(&v[2], "confirmed")?,
            total: int(&v[3], "total")?,
            restocks: int(&v[4], "restocks")?,
        })
    }

    async fn purchase(
        &self,
        sale: &SaleId,
        user: &str,
        user_id: &str,
        quantity: u64,
        idempotency_key: &str,
        params: &SaleParams,
        new_id: &str,
        now: u64,
    ) -> Result<PurchaseOutcome, StoreError> {
        let sale = sale.as_str();
        let call = PurchaseCall {
            user: user.to_string(),
            quantity,
            keyed: !idempotency_key.is_empty(),
            id: purchase_reservation_id(sale, user, idempotency_key, new_id),
            user_id: user_id.to_string(),
            params: *params,
            now,
        };
        self.batcher(
            |b| &b.purchases,
            &sale.to_string(),
            |store, sale, calls| async move { store.purchase_batch(&sale, calls).await },
        )
        .call(call)
        .await
    }

    async fn settle(
        &self,
        sale: &SaleId,
        reservation: &str,
        target: ReservationState,
        now: u64,
    ) -> Result<SettleOutcome, StoreError> {
        let sale = sale.as_str();
        let args = vec![
            reservation.to_string(),
            target.as_str().to_string(),
            now.to_string(),
        ];
        let v = array(
            self.eval(&SCRIPTS.settle, settle_keys(sale), args).await?,
            3,
            "settle",
        )?;
        match text(&v[0], "settle outcome")? {
            "unknown" => Ok(SettleOutcome::Unknown),
            "done" => Ok(SettleOutcome::Done(state_of(&v[1])?)),
            "already" => Ok(SettleOutcome::Already(state_of(&v[1])?)),
            "conflict" => Ok(SettleOutcome::Conflict(state_of(&v[1])?)),
            other => Err(StoreError::Protocol(format!("settle outcome {other}"))),
        }
    }

    async fn sweep(&self, sale: &SaleId, now: u64, max: u64) -> Result<u64, StoreError> {
        let sale = sale.as_str();
        let v = self
            .eval(
                &SCRIPTS.sweep,
                settle_keys(sale),
                vec![now.to_string(), max.to_string()],
            )
            .await?;
        int(&v, "sweep count")
    }

    async fn add_stock(
        &self,
        sale: &SaleId,
        units: i64,
        now: u64,
    ) -> Result<(i64, u64), StoreError> {
        let sale = sale.as_str();
        let keys = vec![key(sale, "stock"), key(sale, "orders")];
        let v = array(
            self.eval(
                &SCRIPTS.add_stock,
                keys,
                vec![units.to_string(), now.to_string()],
            )
            .await?,
            2,
            "add stock",
        )?;
        let applied = match &v[0] {
            Value::Integer(i) => *i,
            _ => return Err(StoreError::Protocol("add stock units".into())),
        };
        Ok((applied, int(&v[1], "available")?))
    }

    async fn claim_coupon(
        &self,
        campaign: &CampaignId,
        user: &str,
        user_id: &str,
        limit: u64,
        now: u64,
    ) -> Result<CouponOutcome, StoreError> {
        let campaign = campaign.as_str();
        let keys = vec![
            key(campaign, "issued"),
            key(campaign, "claimed"),
            key(campaign, "log"),
        ];
        let args = vec![
            user.to_string(),
            limit.to_string(),
            now.to_string(),
            user_id.to_string(),
        ];
        let v = array(
            self.eval_acked(&SCRIPTS.claim_coupon, keys, args).await?,
            2,
            "coupon",
        )?;
        match text(&v[0], "coupon outcome")? {
            "new" => Ok(CouponOutcome::New(int(&v[1], "serial")?)),
            "existing" => Ok(CouponOutcome::Existing(int(&v[1], "serial")?)),
            "exhausted" => Ok(CouponOutcome::Exhausted),
            other => Err(StoreError::Protocol(format!("coupon outcome {other}"))),
        }
    }

    async fn order_events(&self, sale: &SaleId) -> Result<u64, StoreError> {
        let sale = sale.as_str();
        self.stream_len(&key(sale, "orders")).await
    }

    async fn coupon_log_len(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        let campaign = campaign.as_str();
        self.stream_len(&key(campaign, "log")).await
    }

    async fn order_log(&self, sale: &SaleId) -> Result<Vec<StreamEntry>, StoreError> {
        self.stream_entries(&key(sale.as_str(), "orders")).await
    }

    async fn coupon_log(&self, campaign: &CampaignId) -> Result<Vec<StreamEntry>, StoreError> {
        self.stream_entries(&key(campaign.as_str(), "log")).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn existing_reservations_are_read_from_their_record() {
        let id = || "s.r1".to_string();
        let r = existing_reservation(id(), "confirmed|user|with|bars|3|1700000000000", 7).unwrap();
        assert_eq!(r.id, "s.r1");
        assert_eq!(r.state, ReservationState::Confirmed);
        assert_eq!(
            (r.quantity, r.expires_ms, r.available),
            (3, 1_700_000_000_000, 7)
        );
        // An empty or damaged record is a protocol error.
        assert!(existing_reservation(id(), "", 7).is_err());
        assert!(existing_reservation(id(), "weird|u|1|2", 7).is_err());
        assert!(existing_reservation(id(), "reserved|u|x|2", 7).is_err());
    }
}
