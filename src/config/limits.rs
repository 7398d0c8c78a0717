//! `[limits]`: per-client request budgets. Every value is valid (`0` per minute turns a limit
//! off), so this section has no rules of its own.

use serde::{Deserialize, Serialize};

/// `[limits]`: requests per minute and burst per client (ticket, pass, or IP); `0` per
/// minute turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Joins per client IP.
    pub join_per_minute: u32,
    /// Joins allowed at once.
    pub join_burst: u32,
    /// Position polls per ticket.
    pub poll_per_minute: u32,
    /// Polls allowed at once.
    pub poll_burst: u32,
    /// Purchase attempts per pass.
    pub purchase_per_minute: u32,
    /// Purchase attempts allowed at once.
    pub purchase_burst: u32,
    /// Coupon claims per pass or client IP.
    pub coupon_per_minute: u32,
    /// Coupon claims allowed at once.
    pub coupon_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            join_per_minute: 60,
            join_burst: 20,
            poll_per_minute: 120,
            poll_burst: 20,
            purchase_per_minute: 30,
            purchase_burst: 10,
            coupon_per_minute: 30,
            coupon_burst: 10,
        }
    }
}

impl LimitsConfig {
    /// Every limit off (load tests, the test suite).
    pub fn off() -> Self {
        Self {
            join_per_minute: 0,
            poll_per_minute: 0,
            purchase_per_minute: 0,
            coupon_per_minute: 0,
            ..Self::default()
        }
    }
}
