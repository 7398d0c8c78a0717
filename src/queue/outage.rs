//! A node's view of a store outage in one room, and under `on_store_error = "capped"` its lease
//! on the room's session slots (see `lease.lua`).
//!
//! While the store answers, the pacer renews the lease every second: up to the node's share of
//! what the room admits in `capped_lease_seconds`, held back in the store from every other
//! admission. When the store stops answering, the node admits on that lease alone: waiters in
//! queue order (a waiter is admitted when its cached position is within what the node's share
//! of the rate allows since the outage began), never more than the lease's slots, and never
//! after the lease's window. Those passes are marked (`deg`). When the store answers again the
//! pacer records them as sessions (`reconcile.lua`) before the room admits anyone else.
//!
//! Why this never exceeds the room's limits across nodes: every slot a node fills during an
//! outage was leased, so no other node nor the pacer could fill it; the store keeps a lease
//! for the lease window plus a session length, so even a node that never comes back cannot
//! have sessions outliving the slots it leased.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::config::OnStoreError;
use crate::store::Lease;

/// How often the pacer renews a capped room's lease while the store answers.
pub const LEASE_RENEW_MS: u64 = 1_000;

/// The node's outage state of one room. Lock-free to ask whether the store is down (every poll
/// asks); the lease itself is behind a mutex only touched by the pacer and by admissions
/// during an outage.
#[derive(Debug, Default)]
pub struct Outage {
    down: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    mode: Option<OnStoreError>,
    /// The node's id in the store.
    node: std::sync::Arc<str>,
    lease_ms: u64,
    /// When this node first saw the store fail (ms), while it is down.
    since: Option<u64>,
    lease: Lease,
    /// Until when the lease may be used (ms): its renewal plus `lease_ms`.
    usable_until: u64,
    renewed_at: u64,
    /// The room's admissions per minute when the lease was renewed.
    rate_per_min: f64,
    /// Admissions made on the lease (not yet given back by a reconcile).
    used: u64,
    /// Identity → session expiry (ms) of the outage's admissions, until recorded in the store.
    admitted: HashMap<String, u64>,
}

/// What the status API shows of a node's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseView {
    /// Slots leased to this node.
    pub slots: u64,
    /// Of them, used during the current or last outage (not yet recorded in the store).
    pub used: u64,
    /// Milliseconds the lease can still be used for.
    pub usable_ms: u64,
}

impl Outage {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below is a plain field store: a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the outage rule, for `capped` the lease window (ms), and the node's id.
    pub fn configure(&self, mode: OnStoreError, lease_ms: u64, node: std::sync::Arc<str>) {
        let mut s = self.state();
        s.mode = Some(mode);
        s.lease_ms = lease_ms;
        s.node = node;
    }

    /// The node's id in the store.
    pub fn node(&self) -> std::sync::Arc<str> {
        self.state().node.clone()
    }

    /// Whether this room keeps a lease (`on_store_error = "capped"`).
    pub fn capped(&self) -> bool {
        self.state().mode == Some(OnStoreError::Capped)
    }

    /// Whether the store is failing for this room as this node last saw it.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The mode this node serves the room in now: `normal`, or while the store is down the
    /// outage rule (`capped`, `fail_closed`, `fail_open`).
    pub fn mode_name(&self) -> &'static str {
        if !self.is_down() {
            return "normal";
        }
        match self.state().mode {
            Some(OnStoreError::Capped) => "capped",
            Some(OnStoreError::FailOpen) => "fail_open",
            Some(OnStoreError::FailClosed) | None => "fail_closed",
        }
    }

    /// A refresh failed at `now`: the outage starts unless it already has. (One slow request
    /// does not start one: the room's pacer decides.)
    pub fn store_down(&self, now: u64) {
        if self.down.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut s = self.state();
        s.since.get_or_insert(now);
    }

    /// The store answered a whole refresh: the outage is over (its admissions wait for
    /// [`Outage::take_admitted`]).
    pub fn store_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            self.state().since = None;
        }
    }

    /// Whether the pacer should renew the lease at `now`.
    pub fn renew_due(&self, now: u64) -> bool {
        let s = self.state();
        s.mode == Some(OnStoreError::Capped) && now >= s.renewed_at + LEASE_RENEW_MS
    }

    /// The slots to ask for: the node's share (among the last lease's holders) of what the
    /// room admits in the lease window at `rate_per_min`, at most `max_active`.
    pub fn want(&self, rate_per_min: u32, max_active: u32) -> u64 {
        let s = self.state();
        let holders = s.lease.holders.max(1);
        let window = (u64::from(rate_per_min) * s.lease_ms).div_ceil(60_000);
        window.div_ceil(holders).min(u64::from(max_active))
    }

    /// How long the store should keep the lease: its window, plus a session, so sessions
    /// admitted on it end before its slots are free again even if this node never returns.
    pub fn store_ttl(&self, session_ms: u64) -> u64 {
        self.state().lease_ms + session_ms
    }

    /// Records a renewed lease (granted at `now`, the room at `rate_per_min`).
    pub fn renewed(&self, lease: Lease, rate_per_min: u32, now: u64) {
        let mut s = self.state();
        s.lease = lease;
        s.renewed_at = now;
        s.usable_until = now + s.lease_ms;
        s.rate_per_min = f64::from(rate_per_min);
        if s.admitted.is_empty() {
            s.used = 0;
        }
    }

    /// Admits `identity` on the lease during an outage, at `position` in the cached queue
    /// (1 for a new arrival in an empty queue). Returns the session expiry (ms) of its pass, or
    /// `None` when it must wait: no outage, not capped, the lease is used up or past its
    /// window, or its position is beyond what the node's share of the rate allows since the
    /// outage began. The same identity asking again gets the same session.
    pub fn admit(&self, identity: &str, position: u64, now: u64, session_ms: u64) -> Option<u64> {
        if !self.is_down() {
            return None;
        }
        let mut s = self.state();
        if s.mode != Some(OnStoreError::Capped) {
            return None;
        }
        if let Some(&exp) = s.admitted.get(identity) {
            return Some(exp);
        }
        let since = s.since?;
        if now >= s.usable_until {
            return None;
        }
        // The node's share of the rate: its lease holders split the room's rate.
        let share = s.rate_per_min / s.lease.holders.max(1) as f64;
        let allowance = 1 + (share * now.saturating_sub(since) as f64 / 60_000.0) as u64;
        let allowance = allowance.min(s.lease.slots);
        if position > allowance || s.used >= allowance {
            return None;
        }
        s.used += 1;
        let exp = now + session_ms;
        s.admitted.insert(identity.to_string(), exp);
        metrics::counter!(crate::ops::metrics::CAPPED_ADMISSIONS).increment(1);
        Some(exp)
    }

    /// The outage's admissions to record in the store (they stay here until
    /// [`Outage::recorded`]).
    pub fn pending(&self) -> Vec<(String, u64)> {
        self.state()
            .admitted
            .iter()
            .map(|(id, exp)| (id.clone(), *exp))
            .collect()
    }

    /// The store recorded `entries` (and took the lease back).
    pub fn recorded(&self, entries: &[(String, u64)]) {
        let mut s = self.state();
        for (id, _) in entries {
            s.admitted.remove(id);
        }
        if s.admitted.is_empty() {
            s.used = 0;
            s.lease.slots = 0;
        }
    }

    /// The lease as the status API shows it.
    pub fn lease_view(&self, now: u64) -> LeaseView {
        let s = self.state();
        LeaseView {
            slots: s.lease.slots,
            used: s.used,
            usable_ms: s.usable_until.saturating_sub(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(slots: u64, holders: u64, rate: u32) -> Outage {
        let o = Outage::default();
        o.configure(OnStoreError::Capped, 10_000, "n".into());
        o.renewed(
            Lease {
                slots,
                holders,
                leased: slots * holders,
            },
            rate,
            0,
        );
        o
    }

    #[test]
    fn admits_nothing_while_the_store_answers() {
        let o = capped(10, 1, 600);
        assert_eq!(o.admit("a", 1, 100, 1_000), None);
        assert_eq!(o.mode_name(), "normal");
    }

    #[test]
    fn admits_in_queue_order_at_the_nodes_share_of_the_rate() {
        // 600/min shared by 2 holders: 5 a second for this node, 1 at once.
        let o = capped(100, 2, 600);
        o.store_down(1_000);
        assert_eq!(o.mode_name(), "capped");
        assert_eq!(o.admit("p2", 2, 1_000, 60_000), None, "position 2 waits");
        assert_eq!(o.admit("p1", 1, 1_000, 60_000), Some(61_000));
        assert_eq!(
            o.admit("p1", 1, 1_100, 60_000),
            Some(61_000),
            "same session"
        );
        assert_eq!(o.admit("p2", 2, 1_100, 60_000), None, "1 so far");
        // A second later: 1 + 5 allowed.
        for (i, who) in ["p2", "p3", "p4", "p5", "p6"].iter().enumerate() {
            assert!(o.admit(who, i as u64 + 2, 2_000, 60_000).is_some(), "{who}");
        }
        assert_eq!(o.admit("p7", 7, 2_000, 60_000), None);
        assert_eq!(o.pending().len(), 6);
    }

    #[test]
    fn never_more_than_the_lease_nor_after_its_window() {
        let o = capped(3, 1, 60_000);
        o.store_down(0);
        let admitted = (1..=10)
            .filter(|i| o.admit(&format!("p{i}"), *i, 5_000, 1_000).is_some())
            .count();
        assert_eq!(admitted, 3);
        let o = capped(3, 1, 60_000);
        o.store_down(0);
        assert_eq!(o.admit("late", 1, 10_000, 1_000), None, "window over");
    }

    #[test]
    fn recorded_admissions_free_the_lease_for_the_next_outage() {
        let o = capped(2, 1, 60_000);
        o.store_down(0);
        assert!(o.admit("a", 1, 10, 1_000).is_some());
        o.store_up();
        let pending = o.pending();
        o.recorded(&pending);
        assert!(o.pending().is_empty());
        assert_eq!(o.lease_view(10).used, 0);
    }
}
