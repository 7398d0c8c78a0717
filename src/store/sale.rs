//! The sale half of the store: stock with reservations, and first-come coupons. Same rules as
//! rooms: every multi-key operation is one Lua script (`lua/purchase.lua`, `settle.lua`,
//! `sweep.lua`, `add_stock.lua`, `claim_coupon.lua`), mirrored by the embedded store.
//!
//! Keys of sale `s`: `rg:{s}:stock` HASH (available, reserved, confirmed, total),
//! `rg:{s}:buyers` HASH user → units held, `rg:{s}:rsv` HASH id → `state|user|qty|expires_ms`,
//! `rg:{s}:rsv_exp` ZSET of expiry entries (one per purchase batch: its reservation ids, space
//! separated, scored by their common expiry ms; a settled id stays until the sweep skips it),
//! `rg:{s}:orders` STREAM. Idempotency
//! needs no index of its own: a purchase with a key is named by [`keyed_reservation_id`], so a
//! retry finds its reservation in `rsv`. Coupon campaign `c`: `rg:{c}:issued` counter, `rg:{c}:claimed`
//! HASH user → serial, `rg:{c}:log` STREAM.
//!
//! Invariant: `available + reserved + confirmed == total` after every operation.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::id::{CampaignId, SaleId};

/// The id a purchase's new reservation gets: `new_id` without an idempotency key, else
/// [`keyed_reservation_id`]. Both stores name reservations through this.
pub(crate) fn purchase_reservation_id(sale: &str, user: &str, key: &str, new_id: &str) -> String {
    if key.is_empty() {
        new_id.to_string()
    } else {
        keyed_id(sale, user, key)
    }
}

/// The id of the reservation a purchase with idempotency key `key` makes: `{sale}.` and 32 hex
/// digits of SHA-256 over sale, user and key. The same sale, user and key always give the same
/// id (on every node, across restarts), different ones practically never, so the reservation
/// itself records that the key was used. Never the id of a purchase without a key (those are
/// random).
pub fn keyed_reservation_id(sale: &SaleId, user: &str, key: &str) -> String {
    keyed_id(sale.as_str(), user, key)
}

fn keyed_id(sale: &str, user: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(sale)
        .chain_update([0])
        .chain_update(user)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let mut half = [0u8; 16];
    half.copy_from_slice(&digest[..16]);
    format!("{sale}.{}", uuid::Uuid::from_bytes(half).simple())
}

/// Per-sale rules passed to every purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleParams {
    /// Units one user may hold (reserved + confirmed) over the whole sale.
    pub per_user_limit: u32,
    /// How long an unpaid reservation holds its units.
    pub reservation_ms: u64,
}

/// A sale's counters, read atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaleState {
    /// Units anyone can buy now.
    pub available: u64,
    /// Units held by reservations that are neither paid nor expired.
    pub reserved: u64,
    /// Units paid for.
    pub confirmed: u64,
    /// Units ever put on sale (initial stock plus additions minus removals).
    pub total: u64,
    /// Restocks ever: additions of units to a set-up sale while it was sold out
    /// ([`SaleState::sold_out`]).
    /// Every node reads the same number, so a waiter is told of each restock once.
    pub restocks: u64,
}

impl SaleState {
    /// Nothing left to sell and nothing that could come back: the room should say sold out.
    pub fn sold_out(&self) -> bool {
        self.available == 0 && self.reserved == 0
    }
}

/// Lifecycle of a reservation: `reserved → confirmed | released | expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Holding units, waiting for payment.
    Reserved,
    /// Paid (final).
    Confirmed,
    /// Given back by the shop (final; units returned).
    Released,
    /// Timed out (final; units returned).
    Expired,
}

impl ReservationState {
    /// The stored / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Reserved => "reserved",
            ReservationState::Confirmed => "confirmed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<ReservationState> {
        match s {
            "reserved" => Some(ReservationState::Reserved),
            "confirmed" => Some(ReservationState::Confirmed),
            "released" => Some(ReservationState::Released),
            "expired" => Some(ReservationState::Expired),
            _ => None,
        }
    }
}

/// A reservation as a purchase returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Reservation id (`{sale}.` and 32 hex digits: random, or [`keyed_reservation_id`]).
    pub id: String,
    /// Units held.
    pub quantity: u64,
    /// When the hold ends unless confirmed, ms since the epoch.
    pub expires_ms: u64,
    /// Units available right after (or, for a repeat, now).
    pub available: u64,
    /// Its state (a repeat may find it confirmed, released or expired).
    pub state: ReservationState,
}

/// What a purchase did. Only `Reserved` changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// A new reservation took the units.
    Reserved(Reservation),
    /// The idempotency key was used before by this user: the same reservation, no stock taken.
    Existing(Reservation),
    /// The user would exceed the per-user limit; `held` units already.
    LimitReached {
        /// Units the user holds.
        held: u64,
    },
    /// Nothing available; `reserved` units may still come back if reservations expire.
    SoldOut {
        /// Units held by live reservations.
        reserved: u64,
    },
    /// Fewer units available than asked for.
    Insufficient {
        /// Units available.
        available: u64,
    },
}

impl PurchaseOutcome {
    /// Metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            PurchaseOutcome::Reserved(_) => "reserved",
            PurchaseOutcome::Existing(_) => "existing",
            PurchaseOutcome::LimitReached { .. } => "limit_reached",
            PurchaseOutcome::SoldOut { .. } => "sold_out",
            PurchaseOutcome::Insufficient { .. } => "insufficient",
        }
    }
}

/// What a confirm / release / expire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The transition was made.
    Done(ReservationState),
    /// It was already in the target state (a retry): nothing changed.
    Already(ReservationState),
    /// It is in another state (e.g. confirming an expired one).
    Conflict(ReservationState),
    /// No such reservation.
    Unknown,
}

/// What a coupon claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponOutcome {
    /// A new coupon with this serial (1-based).
    New(u64),
    /// The user already had this serial.
    Existing(u64),
    /// All coupons are issued.
    Exhausted,
}

/// One entry of an order stream or coupon log: its fields in the order they were written.
pub type StreamEntry = Vec<(String, String)>;

/// Storage of sales and coupons. Ids are typed (parsed at the edge); `user` is the store identity
/// of the buyer (pass `sub`). Every method is atomic across nodes.
#[async_trait]
pub trait SaleStore: Send + Sync + 'static {
    /// Creates the sale's stock record with `stock` units unless it exists. Returns whether it
    /// created it.
    async fn init_sale(&self, sale: &SaleId, stock: u64) -> Result<bool, StoreError>;

    /// The sale's counters.
    async fn sale_state(&self, sale: &SaleId) -> Result<SaleState, StoreError>;

    /// Reserves `quantity` units for `user` (see `lua/purchase.lua`); `user_id` (the shop's
    /// user id, `""` for none) is recorded on the `reserved` order event. An empty
    /// `idempotency_key` means none, and a new reservation is named `new_id`; with a key it is
    /// named [`keyed_reservation_id`] and `new_id` is unused, and when that reservation exists
    /// (in any state) the answer is `Existing` with it: nothing is taken.
    #[allow(clippy::too_many_arguments)]
    async fn purchase(
        &self,
        sale: &SaleId,
        user: &str,
        user_id: &str,
        quantity: u64,
        idempotency_key: &str,
        params: &SaleParams,
        new_id: &str,
        now_ms: u64,
    ) -> Result<PurchaseOutcome, StoreError>;

    /// Moves a reservation to `target` (Confirmed, Released or Expired).
    async fn settle(
        &self,
        sale: &SaleId,
        reservation: &str,
        target: ReservationState,
        now_ms: u64,
    ) -> Result<SettleOutcome, StoreError>;

    /// Expires up to `max` due reservations, earliest expiry first; returns how many. A call may
    /// expire fewer than `max` while more are due when it had to pass over many settled
    /// reservations (the Redis store looks at most 8 × `max` expiry entries' ids per call);
    /// the keeper calls again on its next round, so nothing due is left for long.
    async fn sweep(&self, sale: &SaleId, now_ms: u64, max: u64) -> Result<u64, StoreError>;

    /// Adds (or, negative, removes unsold) units; returns (units applied, available after).
    async fn add_stock(
        &self,
        sale: &SaleId,
        units: i64,
        now_ms: u64,
    ) -> Result<(i64, u64), StoreError>;

    /// Issues the next coupon serial to `user` unless it has one or `limit` are issued; the log
    /// entry records `user_id` (the shop's user id, `""` for none).
    async fn claim_coupon(
        &self,
        campaign: &CampaignId,
        user: &str,
        user_id: &str,
        limit: u64,
        now_ms: u64,
    ) -> Result<CouponOutcome, StoreError>;

    /// Events on the sale's order stream (for audits and tests).
    async fn order_events(&self, sale: &SaleId) -> Result<u64, StoreError>;

    /// The sale's order stream, oldest first: each entry's fields as written (`event`,
    /// `reservation_id`, `user`, `user_id` when known, `quantity`, ...).
    async fn order_log(&self, sale: &SaleId) -> Result<Vec<StreamEntry>, StoreError>;

    /// Entries on the campaign's coupon log.
    async fn coupon_log_len(&self, campaign: &CampaignId) -> Result<u64, StoreError>;

    /// The campaign's coupon log, oldest first (`serial`, `user`, `user_id` when known,
    /// `at_ms`).
    async fn coupon_log(&self, campaign: &CampaignId) -> Result<Vec<StreamEntry>, StoreError>;
}
