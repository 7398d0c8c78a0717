//! Embedded twin of the sale scripts (`lua/purchase.lua`, `settle.lua`, `sweep.lua`,
//! `add_stock.lua`, `claim_coupon.lua`): the same checks in the same order, under one mutex.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;

use super::MemoryStore;
use crate::id::{CampaignId, SaleId};
use crate::store::sale::{
    purchase_reservation_id, CouponOutcome, PurchaseOutcome, Reservation, ReservationState,
    SaleParams, SaleState, SaleStore, SettleOutcome, StreamEntry,
};
use crate::store::StoreError;

/// Sales and coupon campaigns of the embedded store.
#[derive(Default)]
pub(super) struct SaleBook {
    sales: HashMap<String, SaleData>,
    coupons: HashMap<String, CouponData>,
}

#[derive(Default)]
struct SaleData {
    stock: Option<SaleState>,
    buyers: HashMap<String, u64>,
    reservations: HashMap<String, Record>,
    /// (expiry ms, id) of reservations still `reserved`: what the sweep works through (the
    /// Redis store's rsv_exp entries, kept per reservation here and removed on settle).
    due: BTreeSet<(u64, String)>,
    /// The order stream.
    events: Vec<StreamEntry>,
}

#[derive(Clone)]
struct Record {
    state: ReservationState,
    user: String,
    quantity: u64,
    expires_ms: u64,
}

#[derive(Default)]
struct CouponData {
    issued: u64,
    claimed: HashMap<String, u64>,
    log: Vec<StreamEntry>,
}

/// A stream entry from field names and values, in order.
fn entry<const N: usize>(fields: [(&str, String); N]) -> StreamEntry {
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl SaleData {
    fn stock(&mut self) -> &mut SaleState {
        self.stock.get_or_insert_with(SaleState::default)
    }

    /// The units of a reservation leaving `reserved` for `to` (settle.lua / sweep.lua).
    fn close(&mut self, id: &str, to: ReservationState, now: u64) {
        let Some(rec) = self.reservations.get_mut(id) else {
            return;
        };
        let (user, qty, expires) = (rec.user.clone(), rec.quantity, rec.expires_ms);
        let user_name = user.clone();
        rec.state = to;
        let stock = self.stock();
        stock.reserved -= qty;
        if to == ReservationState::Confirmed {
            stock.confirmed += qty;
        } else {
            stock.available += qty;
            let left = self
                .buyers
                .get(&user)
                .copied()
                .unwrap_or(0)
                .saturating_sub(qty);
            if left == 0 {
                self.buyers.remove(&user);
            } else {
                self.buyers.insert(user, left);
            }
        }
        self.due.remove(&(expires, id.to_string()));
        self.events.push(entry([
            ("event", to.as_str().to_string()),
            ("reservation_id", id.to_string()),
            ("user", user_name),
            ("quantity", qty.to_string()),
            ("at_ms", now.to_string()),
        ]));
    }
}

impl MemoryStore {
    fn with_sales<T>(&self, f: impl FnOnce(&mut SaleBook) -> T) -> T {
        let mut book = self.sales.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut book)
    }
}

#[async_trait]
impl SaleStore for MemoryStore {
    async fn init_sale(&self, sale: &SaleId, stock: u64) -> Result<bool, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| {
            let data = b.sales.entry(sale.to_string()).or_default();
            if data.stock.is_some() {
                return false;
            }
            data.stock = Some(SaleState {
                available: stock,
                total: stock,
                ..SaleState::default()
            });
            true
        }))
    }

    async fn sale_state(&self, sale: &SaleId) -> Result<SaleState, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| b.sales.get(sale).and_then(|s| s.stock).unwrap_or_default()))
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
        if quantity < 1 {
            return Err(StoreError::Protocol(
                "quantity must be a positive integer".into(),
            ));
        }
        let keyed = !idempotency_key.is_empty();
        let new_id = purchase_reservation_id(sale, user, idempotency_key, new_id);
        Ok(self.with_sales(|b| {
            let s = b.sales.entry(sale.to_string()).or_default();
            if let Some(rec) = s.reservations.get(&new_id).filter(|_| keyed) {
                return PurchaseOutcome::Existing(Reservation {
                    id: new_id.clone(),
                    quantity: rec.quantity,
                    expires_ms: rec.expires_ms,
                    available: s.stock.unwrap_or_default().available,
                    state: rec.state,
                });
            }
            let held = s.buyers.get(user).copied().unwrap_or(0);
            if held + quantity > u64::from(params.per_user_limit) {
                return PurchaseOutcome::LimitReached { held };
            }
            // Read without creating the record: like the script's HMGET, a purchase on a sale
            // that does not exist leaves it absent (so a later init_sale still creates it).
            let stock = s.stock.unwrap_or_default();
            if stock.available == 0 {
                return PurchaseOutcome::SoldOut {
                    reserved: stock.reserved,
                };
            }
            if stock.available < quantity {
                return PurchaseOutcome::Insufficient {
                    available: stock.available,
                };
            }
            let expires_ms = now + params.reservation_ms;
            let st = s.stock();
            st.available -= quantity;
            st.reserved += quantity;
            let available = st.available;
            *s.buyers.entry(user.to_string()).or_default() += quantity;
            s.reservations.insert(
                new_id.clone(),
                Record {
                    state: ReservationState::Reserved,
                    user: user.to_string(),
                    quantity,
                    expires_ms,
                },
            );
            s.due.insert((expires_ms, new_id.clone()));
            let mut event = entry([
                ("event", "reserved".to_string()),
                ("reservation_id", new_id.clone()),
                ("user", user.to_string()),
            ]);
            if !user_id.is_empty() {
                event.push(("user_id".into(), user_id.to_string()));
            }
            event.extend(entry([
                ("quantity", quantity.to_string()),
                ("expires_at_ms", expires_ms.to_string()),
                ("at_ms", now.to_string()),
            ]));
            s.events.push(event);
            PurchaseOutcome::Reserved(Reservation {
                id: new_id,
                quantity,
                expires_ms,
                available,
                state: ReservationState::Reserved,
            })
        }))
    }

    async fn settle(
        &self,
        sale: &SaleId,
        reservation: &str,
        target: ReservationState,
        now: u64,
    ) -> Result<SettleOutcome, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| {
            let Some(s) = b.sales.get_mut(sale) else {
                return SettleOutcome::Unknown;
            };
            let Some(rec) = s.reservations.get(reservation).cloned() else {
                return SettleOutcome::Unknown;
            };
            if rec.state != ReservationState::Reserved {
                return if rec.state == target {
                    SettleOutcome::Already(rec.state)
                } else {
                    SettleOutcome::Conflict(rec.state)
                };
            }
            let to = if target == ReservationState::Confirmed && rec.expires_ms <= now {
                ReservationState::Expired
            } else {
                target
            };
            if target == ReservationState::Expired && rec.expires_ms > now {
                return SettleOutcome::Conflict(rec.state);
            }
            s.close(reservation, to, now);
            if to == target {
                SettleOutcome::Done(to)
            } else {
                SettleOutcome::Conflict(to)
            }
        }))
    }

    async fn sweep(&self, sale: &SaleId, now: u64, max: u64) -> Result<u64, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| {
            let Some(s) = b.sales.get_mut(sale) else {
                return 0;
            };
            let due: Vec<(u64, String)> = s
                .due
                .iter()
                .take_while(|(exp, _)| *exp <= now)
                .take(max as usize)
                .cloned()
                .collect();
            let mut n = 0;
            for (exp, id) in due {
                s.due.remove(&(exp, id.clone()));
                if s.reservations.get(&id).map(|r| r.state) == Some(ReservationState::Reserved) {
                    s.close(&id, ReservationState::Expired, now);
                    n += 1;
                }
            }
            n
        }))
    }

    async fn add_stock(
        &self,
        sale: &SaleId,
        units: i64,
        now: u64,
    ) -> Result<(i64, u64), StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| {
            let s = b.sales.entry(sale.to_string()).or_default();
            let available = s.stock.map_or(0, |st| st.available);
            let sold_out = s.stock.is_some_and(|st| st.sold_out());
            let applied = units.max(-(available as i64));
            if applied > 0 && sold_out {
                s.stock().restocks += 1;
            }
            // Like the script, only a change writes (and so creates) the stock record.
            if applied != 0 {
                let st = s.stock();
                st.available = (st.available as i64 + applied) as u64;
                st.total = (st.total as i64 + applied) as u64;
                s.events.push(entry([
                    ("event", "stock_changed".to_string()),
                    ("units", applied.to_string()),
                    ("at_ms", now.to_string()),
                ]));
            }
            (applied, s.stock.map_or(0, |st| st.available))
        }))
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
        Ok(self.with_sales(|b| {
            let c = b.coupons.entry(campaign.to_string()).or_default();
            if let Some(&serial) = c.claimed.get(user) {
                return CouponOutcome::Existing(serial);
            }
            if c.issued >= limit {
                return CouponOutcome::Exhausted;
            }
            c.issued += 1;
            c.claimed.insert(user.to_string(), c.issued);
            let mut line = entry([("serial", c.issued.to_string()), ("user", user.to_string())]);
            if !user_id.is_empty() {
                line.push(("user_id".into(), user_id.to_string()));
            }
            line.push(("at_ms".into(), now.to_string()));
            c.log.push(line);
            CouponOutcome::New(c.issued)
        }))
    }

    async fn order_events(&self, sale: &SaleId) -> Result<u64, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| b.sales.get(sale).map_or(0, |s| s.events.len() as u64)))
    }

    async fn coupon_log_len(&self, campaign: &CampaignId) -> Result<u64, StoreError> {
        let campaign = campaign.as_str();
        Ok(self.with_sales(|b| b.coupons.get(campaign).map_or(0, |c| c.log.len() as u64)))
    }

    async fn order_log(&self, sale: &SaleId) -> Result<Vec<StreamEntry>, StoreError> {
        let sale = sale.as_str();
        Ok(self.with_sales(|b| {
            b.sales
                .get(sale)
                .map(|s| s.events.clone())
                .unwrap_or_default()
        }))
    }

    async fn coupon_log(&self, campaign: &CampaignId) -> Result<Vec<StreamEntry>, StoreError> {
        let campaign = campaign.as_str();
        Ok(self.with_sales(|b| {
            b.coupons
                .get(campaign)
                .map(|c| c.log.clone())
                .unwrap_or_default()
        }))
    }
}
