//! What this node knows of a room's revocations: the newest holder generation of every place
//! that moved to another device or whose session ended, learned from the store's revocation
//! feed once per refresh. Polls, the gate, the proxy and purchases check it in memory, so a
//! revocation costs no store call on those paths and reaches every node within one refresh.
//! Entries are forgotten when every ticket and pass they could refuse has expired anyway, so
//! memory is bounded by the revocations of the last day.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::pass::PassClaims;
use crate::store::{Revocation, RevokeReason};

/// One identity's revocation: tickets and passes below `gen` are refused.
#[derive(Debug, Clone, Copy)]
struct Revoked {
    gen: u32,
    reason: RevokeReason,
    until_ms: u64,
}

/// A room's revocations on this node.
#[derive(Debug, Default)]
pub struct Revocations {
    by_identity: DashMap<String, Revoked, foldhash::fast::RandomState>,
    /// Feed entries applied so far (the index to read on from).
    applied: AtomicU64,
    /// When expired entries were last dropped (ms).
    pruned_at: AtomicU64,
}

/// Least time between two sweeps for expired entries: a sweep walks every entry, and entries
/// live for a day, so sweeping every refresh would cost more than it frees.
const PRUNE_EVERY_MS: u64 = 5_000;

impl Revocations {
    /// Why a ticket or pass of `identity` at holder generation `gen` no longer works, if it
    /// does not: the place moved on (`Transferred`) or its session ended (`Ended`).
    pub fn check(&self, identity: &str, gen: u32) -> Option<RevokeReason> {
        if self.by_identity.is_empty() {
            return None;
        }
        self.by_identity
            .get(identity)
            .filter(|r| gen < r.gen)
            .map(|r| r.reason)
    }

    /// Whether a pass is revoked: its place moved on or its session ended.
    pub fn refuses(&self, pass: &PassClaims) -> bool {
        self.check(&pass.sub, pass.gen).is_some()
    }

    /// Applies feed entries (in feed order; an older generation never replaces a newer one).
    pub fn apply(&self, entries: &[Revocation]) {
        for e in entries {
            let revoked = Revoked {
                gen: e.gen,
                reason: e.reason,
                until_ms: e.until_ms,
            };
            self.by_identity
                .entry(e.identity.clone())
                .and_modify(|r| {
                    if e.gen >= r.gen {
                        *r = revoked;
                    }
                })
                .or_insert(revoked);
        }
    }

    /// Feed entries applied so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that the feed was applied up to (not including) index `next`.
    pub fn set_applied(&self, next: u64) {
        self.applied.fetch_max(next, Ordering::AcqRel);
    }

    /// Forgets entries whose tickets and passes have all expired by `now_ms` (at most once
    /// per [`PRUNE_EVERY_MS`]; an expired entry refuses only tickets and passes that are
    /// expired themselves, so keeping it a little longer changes no answer).
    pub fn prune(&self, now_ms: u64) {
        if self.by_identity.is_empty() {
            return;
        }
        let last = self.pruned_at.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < PRUNE_EVERY_MS {
            return;
        }
        self.pruned_at.store(now_ms, Ordering::Relaxed);
        self.by_identity.retain(|_, r| r.until_ms > now_ms);
    }

    /// Identities remembered (for metrics and tests).
    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, gen: u32, reason: RevokeReason, until_ms: u64) -> Revocation {
        Revocation {
            identity: id.into(),
            gen,
            reason,
            until_ms,
        }
    }

    #[test]
    fn refuses_older_generations_until_the_entry_expires() {
        let r = Revocations::default();
        assert_eq!(r.check("a", 0), None);
        r.apply(&[entry("a", 1, RevokeReason::Transferred, 1_000)]);
        assert_eq!(r.check("a", 0), Some(RevokeReason::Transferred));
        assert_eq!(r.check("a", 1), None, "the new holder's generation works");
        assert_eq!(r.check("b", 0), None);
        r.apply(&[
            entry("a", 2, RevokeReason::Ended, 2_000),
            entry("a", 1, RevokeReason::Transferred, 1_000),
        ]);
        assert_eq!(r.check("a", 1), Some(RevokeReason::Ended), "newest wins");
        r.prune(1_500 + PRUNE_EVERY_MS);
        assert_eq!(r.check("a", 1), None, "expired entries are dropped");
        assert!(r.is_empty());
    }
}
