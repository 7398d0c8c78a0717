//! The sessions this node has claimed (or seen claimed) in a room, with the pass it handed
//! out: an admitted ticket that keeps polling (a native app, a second tab) is answered from
//! here instead of asking the store to claim its session again.
//!
//! Safe to answer from memory because a session's end always reaches the node before its
//! expiry would: a `leave` or an operator's end revokes the identity's generation (on this node
//! at once, on the others from their next refresh), and [`crate::queue::place`] checks the
//! revocations before it looks here; a session that simply runs out is dropped at its expiry.
//! An entry is keyed by identity and generation, so a place moved to another device (a new
//! generation) never finds the old session's pass.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most sessions remembered per room on a node. Past it, further sessions are answered by the
/// store as before (a bound on memory: an entry is a pass and a few numbers, ~0.5 KB).
pub const MAX_REMEMBERED: usize = 100_000;

/// How often expired entries are swept (ms): lookups ignore them meanwhile.
const SWEEP_EVERY_MS: u64 = 5_000;

/// One remembered session.
#[derive(Debug, Clone)]
struct Remembered {
    gen: u32,
    /// The session's end (ms).
    expiry_ms: u64,
    pass: String,
    /// The pass's `exp` (s).
    exp: u64,
}

/// The sessions a node remembers for one room (see the module doc).
#[derive(Debug, Default)]
pub struct SessionPasses {
    by_identity: DashMap<String, Remembered>,
    last_sweep: AtomicU64,
}

impl SessionPasses {
    /// The pass (and its `exp`) of `identity`'s running session of generation `gen`, when this
    /// node remembers one that has not ended by `now_ms`.
    pub fn get(&self, identity: &str, gen: u32, now_ms: u64) -> Option<(String, u64)> {
        let r = self.by_identity.get(identity)?;
        (r.gen == gen && now_ms < r.expiry_ms).then(|| (r.pass.clone(), r.exp))
    }

    /// Remembers the session just claimed for `identity` (generation `gen`, ending at
    /// `expiry_ms`) and the pass handed out for it. Nothing is remembered past
    /// [`MAX_REMEMBERED`] sessions.
    pub fn remember(&self, identity: &str, gen: u32, expiry_ms: u64, pass: &str, exp: u64) {
        if self.by_identity.len() >= MAX_REMEMBERED && !self.by_identity.contains_key(identity) {
            return;
        }
        self.by_identity.insert(
            identity.to_string(),
            Remembered {
                gen,
                expiry_ms,
                pass: pass.to_string(),
                exp,
            },
        );
    }

    /// Forgets `identity`'s session (it ended on this node).
    pub fn forget(&self, identity: &str) {
        self.by_identity.remove(identity);
    }

    /// Drops sessions past their end, at most every few seconds.
    pub fn sweep(&self, now_ms: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now_ms < last + SWEEP_EVERY_MS
            || self
                .last_sweep
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.by_identity.retain(|_, r| r.expiry_ms > now_ms);
    }

    /// Sessions remembered now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_answered_for_its_generation_until_it_ends() {
        let s = SessionPasses::default();
        s.remember("alice", 2, 10_000, "pass-a", 10);
        assert_eq!(s.get("alice", 2, 9_999), Some(("pass-a".to_string(), 10)));
        assert_eq!(s.get("alice", 2, 10_000), None, "ended");
        assert_eq!(s.get("alice", 3, 5_000), None, "another generation");
        assert_eq!(s.get("bob", 2, 5_000), None);
        s.forget("alice");
        assert_eq!(s.get("alice", 2, 5_000), None);
    }

    #[test]
    fn expired_sessions_are_swept_and_the_count_is_bounded() {
        let s = SessionPasses::default();
        s.remember("a", 0, 6_000, "p", 6);
        s.remember("b", 0, 60_000, "p", 60);
        s.sweep(10_000);
        assert_eq!(s.len(), 1);
        s.sweep(12_000);
        assert_eq!(s.len(), 1, "not swept again within SWEEP_EVERY_MS");
        for i in 0..MAX_REMEMBERED + 10 {
            s.remember(&format!("x{i}"), 0, 60_000, "p", 60);
        }
        assert_eq!(s.len(), MAX_REMEMBERED);
    }
}
