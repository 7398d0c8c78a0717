//! `[[sales]]` (stock sold behind a room), `[[coupons]]` (first-come coupon campaigns) and
//! `[shop]` (the key the shop backend uses). Sales and coupons name rooms by id, so their rules
//! take the configured room ids; coupon ids must not collide with sale ids.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};
use crate::id::is_valid_id;

/// One `[[sales]]` entry: stock sold to shoppers admitted through `room`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleConfig {
    /// Sale id: `[a-z0-9_-]{1,64}`.
    pub id: String,
    /// Buying needs a valid pass of this room; at most one sale per room.
    pub room: String,
    /// Units put on sale when the sale is first seen by the store (later changes: add-stock).
    pub stock: u64,
    /// Units per user key over the whole sale.
    #[serde(default = "defaults::per_user_limit")]
    pub per_user_limit: u32,
    /// Unpaid reservations return to stock after this.
    #[serde(default = "defaults::reservation_seconds")]
    pub reservation_seconds: u32,
    /// Admitted shoppers who have not bought yet, per available unit (stock-aware admission).
    #[serde(default = "defaults::admit_per_unit")]
    pub admit_per_unit: f64,
}

mod defaults {
    pub fn per_user_limit() -> u32 {
        1
    }
    pub fn reservation_seconds() -> u32 {
        600
    }
    pub fn admit_per_unit() -> f64 {
        1.0
    }
}

impl SaleConfig {
    /// A sale with default settings (env-override key discovery and tests).
    pub fn with_ids(id: &str, room: &str, stock: u64) -> Self {
        Self {
            id: id.to_string(),
            room: room.to_string(),
            stock,
            per_user_limit: defaults::per_user_limit(),
            reservation_seconds: defaults::reservation_seconds(),
            admit_per_unit: defaults::admit_per_unit(),
        }
    }
}

/// One `[[coupons]]` entry: a first-come coupon campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponConfig {
    /// Campaign id: `[a-z0-9_-]{1,64}`.
    pub id: String,
    /// Coupons in total; never more are issued.
    pub limit: u64,
    /// When set, claiming needs a pass of this room (the user is the pass subject); otherwise
    /// the body names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `[shop]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// Bearer key the shop backend uses to confirm and release reservations.
    pub api_key: Secret,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            api_key: Secret("change-me-shop-key".into()),
        }
    }
}

impl ShopConfig {
    /// The API key is long enough.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.api_key.0.len() < 8 {
            problems.push(Problem::new(
                "shop.api_key",
                "must be at least 8 characters",
            ));
        }
    }
}

/// Every sale's rules, sale by sale (`rooms`: the configured room ids); returns the valid,
/// distinct sale ids for [`validate_coupons`].
pub(super) fn validate_sales<'a>(
    sales: &'a [SaleConfig],
    rooms: &HashSet<&str>,
    problems: &mut Vec<Problem>,
) -> HashSet<&'a str> {
    let mut sale_ids = HashSet::new();
    let mut sale_rooms = HashSet::new();
    for (i, sale) in sales.iter().enumerate() {
        let mut field =
            |name: &str, msg: &str| problems.push(Problem::new(format!("sales[{i}].{name}"), msg));
        if !is_valid_id(&sale.id) {
            field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
        } else if !sale_ids.insert(sale.id.as_str()) {
            field("id", "is used by another sale");
        }
        if !rooms.contains(sale.room.as_str()) {
            field("room", "must be the id of a configured room");
        } else if !sale_rooms.insert(sale.room.as_str()) {
            field("room", "already has a sale (one sale per room)");
        }
        if sale.per_user_limit == 0 {
            field("per_user_limit", "must be greater than 0");
        }
        if sale.reservation_seconds == 0 {
            field("reservation_seconds", "must be greater than 0");
        }
        if !(sale.admit_per_unit.is_finite() && sale.admit_per_unit > 0.0) {
            field("admit_per_unit", "must be a number greater than 0");
        }
        if sale.stock > i64::MAX as u64 {
            field("stock", "is too large");
        }
    }
    sale_ids
}

/// Every coupon campaign's rules (`rooms`: the configured room ids; `sale_ids`: from
/// [`validate_sales`]).
pub(super) fn validate_coupons(
    coupons: &[CouponConfig],
    rooms: &HashSet<&str>,
    sale_ids: &HashSet<&str>,
    problems: &mut Vec<Problem>,
) {
    let mut coupon_ids = HashSet::new();
    for (i, coupon) in coupons.iter().enumerate() {
        let mut field = |name: &str, msg: &str| {
            problems.push(Problem::new(format!("coupons[{i}].{name}"), msg))
        };
        if !is_valid_id(&coupon.id) {
            field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
        } else if !coupon_ids.insert(coupon.id.as_str()) {
            field("id", "is used by another coupon campaign");
        } else if sale_ids.contains(coupon.id.as_str()) {
            field("id", "is used by a sale (their keys would share a slot)");
        }
        if coupon.limit == 0 {
            field("limit", "must be greater than 0");
        }
        if let Some(room) = &coupon.room {
            if !rooms.contains(room.as_str()) {
                field("room", "must be the id of a configured room");
            }
        }
    }
}
