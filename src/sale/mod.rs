//! Sales and coupons on a node: the configured sales with a cached copy of their stock counters
//! (refreshed by the keeper loop, read by the room pacer and by waiters' polls), and coupon
//! campaigns; the purchase rules (`purchase`) and coupon claims (`coupon`).

pub mod coupon;
pub mod keeper;
pub mod purchase;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use metrics::Counter;

use crate::config::{CouponConfig, SaleConfig};
use crate::id::{CampaignId, ReservationId, SaleId};
use crate::ops::metrics::{
    Handles, PURCHASES, SALE_AVAILABLE, SALE_CONFIRMED, SALE_RESERVED, SALE_TOTAL,
};
use crate::store::sale::{SaleParams, SaleState};

/// One sale on this node.
pub struct Sale {
    /// Its id (the config's, parsed).
    pub id: SaleId,
    /// Its settings.
    pub config: SaleConfig,
    /// Store parameters derived from the settings.
    pub params: SaleParams,
    state: ArcSwapOption<SaleState>,
    /// `rushgate_purchases_total` per outcome, labelled with this sale.
    purchases: Handles<&'static str, Counter>,
}

impl Sale {
    /// A sale whose state is unknown until the keeper's first refresh.
    pub fn new(id: SaleId, config: SaleConfig) -> Self {
        let params = SaleParams {
            per_user_limit: config.per_user_limit,
            reservation_ms: u64::from(config.reservation_seconds) * 1000,
        };
        Self {
            id,
            config,
            params,
            state: ArcSwapOption::empty(),
            purchases: Handles::new(),
        }
    }

    /// Counts one purchase attempt that ended with `outcome` (a `PurchaseOutcome` label).
    pub fn count_purchase(&self, outcome: &'static str) {
        self.purchases.record(
            outcome,
            || metrics::counter!(PURCHASES, "sale" => self.config.id.clone(), "outcome" => outcome),
            |c| c.increment(1),
        );
    }

    /// The last stock counters read from the store (`None` before the first read).
    pub fn cached_state(&self) -> Option<SaleState> {
        self.state.load().as_deref().copied()
    }

    /// Publishes freshly read counters.
    pub fn publish(&self, state: SaleState) {
        self.state.store(Some(Arc::new(state)));
    }

    /// How many admitted shoppers who have not bought yet the room may hold: available units
    /// times `admit_per_unit` (rounded up, so one unit left still admits one shopper).
    pub fn admit_cap(&self, state: &SaleState) -> u64 {
        self.admit_cap_for(state.available)
    }

    /// [`Sale::admit_cap`] for `available` units.
    pub fn admit_cap_for(&self, available: u64) -> u64 {
        (available as f64 * self.config.admit_per_unit).ceil() as u64
    }

    /// Copies this sale's cached stock into its Prometheus gauges (memory only, never the
    /// store).
    pub fn observe_metrics(&self) {
        let Some(state) = self.cached_state() else {
            return;
        };
        let id = self.config.id.clone();
        metrics::gauge!(SALE_AVAILABLE, "sale" => id.clone()).set(state.available as f64);
        metrics::gauge!(SALE_RESERVED, "sale" => id.clone()).set(state.reserved as f64);
        metrics::gauge!(SALE_CONFIRMED, "sale" => id.clone()).set(state.confirmed as f64);
        metrics::gauge!(SALE_TOTAL, "sale" => id).set(state.total as f64);
    }
}

/// Every sale by id, and by the room it sells behind.
#[derive(Clone, Default)]
pub struct Sales {
    by_id: Arc<HashMap<String, Arc<Sale>>>,
    by_room: Arc<HashMap<String, Arc<Sale>>>,
}

impl Sales {
    /// Builds the sales of a validated configuration (ids that fail to parse are skipped; the
    /// config's validation has refused them already).
    pub fn new(configs: &[SaleConfig]) -> Self {
        let sales: Vec<Arc<Sale>> = configs
            .iter()
            .filter_map(|c| Some(Arc::new(Sale::new(SaleId::parse(&c.id)?, c.clone()))))
            .collect();
        Self {
            by_id: Arc::new(
                sales
                    .iter()
                    .map(|s| (s.config.id.clone(), s.clone()))
                    .collect(),
            ),
            by_room: Arc::new(
                sales
                    .iter()
                    .map(|s| (s.config.room.clone(), s.clone()))
                    .collect(),
            ),
        }
    }

    /// Sales from an id → sale map (hot reload builds one from kept and new sales).
    pub fn from_map(by_id: HashMap<String, Arc<Sale>>) -> Self {
        let by_room = by_id
            .values()
            .map(|s| (s.config.room.clone(), s.clone()))
            .collect();
        Self {
            by_id: Arc::new(by_id),
            by_room: Arc::new(by_room),
        }
    }

    /// The sale with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Sale>> {
        self.by_id.get(id)
    }

    /// The sale a reservation belongs to (its id starts with the sale's).
    pub fn of_reservation(&self, reservation: &ReservationId) -> Option<&Arc<Sale>> {
        self.by_id.get(reservation.sale())
    }

    /// The sale behind a room, if any.
    pub fn for_room(&self, room: &str) -> Option<&Arc<Sale>> {
        self.by_room.get(room)
    }

    /// All sales.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Sale>> {
        self.by_id.values()
    }
}

/// One coupon campaign on this node.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Its id (the config's, parsed).
    pub id: CampaignId,
    /// Its settings.
    pub config: CouponConfig,
}

/// Every coupon campaign by id.
#[derive(Clone, Default)]
pub struct Coupons {
    by_id: Arc<HashMap<String, Campaign>>,
}

impl Coupons {
    /// Builds the campaigns of a validated configuration (ids that fail to parse are skipped).
    pub fn new(configs: &[CouponConfig]) -> Self {
        let by_id = configs
            .iter()
            .filter_map(|c| {
                let id = CampaignId::parse(&c.id)?;
                Some((
                    c.id.clone(),
                    Campaign {
                        id,
                        config: c.clone(),
                    },
                ))
            })
            .collect();
        Self {
            by_id: Arc::new(by_id),
        }
    }

    /// The campaign with this id.
    pub fn get(&self, id: &str) -> Option<&Campaign> {
        self.by_id.get(id)
    }
}
