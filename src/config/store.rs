//! `[store]`: where room, sale and coupon state lives (Redis or the embedded store), how the
//! store is used, and what shoppers get while it is unreachable.

use serde::{Deserialize, Serialize};

use super::Problem;

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://` or `rediss://` URL; absent means the embedded in-process store (one node only).
    pub redis_url: Option<String>,
    /// What requests that need the store get while it is unreachable.
    pub on_store_error: OnStoreError,
    /// Per-command timeout; a slower store counts as unavailable.
    pub command_timeout_ms: u64,
    /// How often each node refreshes its cached room state (and ticks the pacer).
    pub refresh_ms: u64,
    /// Redis connections per node.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_store_error: OnStoreError::FailClosed,
            command_timeout_ms: 1000,
            refresh_ms: 250,
            pool_size: 4,
        }
    }
}

/// Store outage policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Refuse work that needs the store with 503 + `Retry-After`.
    FailClosed,
    /// Let shoppers through (issue passes without queueing) while the store is down.
    FailOpen,
}

impl StoreConfig {
    /// URL scheme, timeout, refresh interval and pool size rules.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                bad("store.redis_url", "must start with redis:// or rediss://");
            }
        }
        if self.command_timeout_ms == 0 {
            bad("store.command_timeout_ms", "must be greater than 0");
        }
        if !(10..=5000).contains(&self.refresh_ms) {
            bad("store.refresh_ms", "must be between 10 and 5000");
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            bad("store.pool_size", "must be between 1 and 64");
        }
    }
}
