//! How much proof of work a join is asked for: the room's join pressure on this node, from the
//! rate of requests for a new place against the admission rate and from each client address.
//!
//! The rule, kept simple on purpose:
//! - room ratio = requests for a new place per second on this node ÷ the admission rate per
//!   second (at least 1/s); address ratio = that address's requests per second ÷
//!   [`FREE_JOINS_PER_ADDRESS`].
//! - `adaptive` asks for work only when a ratio is above 1; `always` asks every time; `off`
//!   never.
//! - bits = `pow_min_bits` + ⌊log2 room ratio⌋ + ⌊log2 address ratio⌋ (each term counted from a
//!   ratio above 1), clamped to `[pow_min_bits, pow_max_bits]`. One bit doubles the expected
//!   hashes, so the work per join grows in proportion to the oversubscription, and a single
//!   address flooding the room pays for both terms.
//!
//! Rates are sliding one-second windows (this second's count plus the previous second's,
//! weighted by how much of it still overlaps), so a flood's pressure is felt at once and is gone
//! within two seconds of its end. Requests count whether or not they carried a solution: a
//! client that hammers without solving raises its own price. Counts are per node: behind a load
//! balancer each node sees its share of the joins against the whole admission rate, so with `n`
//! nodes the room ratio reads `n` times lower. Memory is bounded: addresses idle for two
//! seconds are swept once a second, and past [`MAX_ADDRESSES`] the address table starts afresh.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::config::{PowMode, RoomConfig};

/// Requests for a new place per second one address may make before `adaptive` asks it for work
/// (a page that solves a challenge asks twice: once for the challenge, once with the answer;
/// a few shoppers may share an address).
pub const FREE_JOINS_PER_ADDRESS: f64 = 2.0;
/// The admission rate the room ratio divides by is at least this many per second, so a room
/// paced at a few per minute still lets a trickle of joins in without work.
const MIN_ADMIT_PER_SECOND: f64 = 1.0;
/// Most addresses tracked at once (about 64 bytes each): past it the table starts afresh.
pub const MAX_ADDRESSES: usize = 100_000;

/// A room's proof-of-work settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowPolicy {
    /// When work is asked.
    pub mode: PowMode,
    /// Least work asked (leading zero bits).
    pub min_bits: u8,
    /// Most work asked.
    pub max_bits: u8,
}

impl PowPolicy {
    /// The settings of a room.
    pub fn of(config: &RoomConfig) -> Self {
        Self {
            mode: config.pow,
            min_bits: config.pow_min_bits,
            max_bits: config.pow_max_bits,
        }
    }
}

/// Requests in the current second and the one before it.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    second: u64,
    current: u32,
    previous: u32,
}

impl Window {
    fn add(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        if second == self.second {
            self.current = self.current.saturating_add(1);
            return;
        }
        self.previous = if second == self.second + 1 {
            self.current
        } else {
            0
        };
        self.second = second;
        self.current = 1;
    }

    /// Requests per second over the last second: this second's count plus the share of the
    /// previous second's that still falls in the window.
    fn rate(&self, now_ms: u64) -> f64 {
        let second = now_ms / 1000;
        let overlap = 1.0 - (now_ms % 1000) as f64 / 1000.0;
        if second == self.second {
            f64::from(self.previous) * overlap + f64::from(self.current)
        } else if second == self.second + 1 {
            f64::from(self.current) * overlap
        } else {
            0.0
        }
    }
}

/// The join pressure of one room on this node. Shared by every request of the room; each
/// record and read takes one short lock (the room's window, or one shard of the address table).
#[derive(Debug, Default)]
pub struct Pressure {
    room: Mutex<Window>,
    addresses: DashMap<IpAddr, Window>,
    /// The second of the last sweep of idle addresses.
    swept: AtomicU64,
}

impl Pressure {
    /// No pressure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a request for a new place from `client` at `now_ms`.
    pub fn record(&self, client: IpAddr, now_ms: u64) {
        self.room
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(now_ms);
        let second = now_ms / 1000;
        if self.swept.fetch_max(second, Ordering::Relaxed) < second {
            // Once a second: forget addresses quiet for the whole window.
            self.addresses.retain(|_, w| w.second + 1 >= second);
        }
        let new = match self.addresses.entry(client) {
            Entry::Occupied(mut e) => {
                e.get_mut().add(now_ms);
                false
            }
            Entry::Vacant(e) => {
                let mut w = Window::default();
                w.add(now_ms);
                e.insert(w);
                true
            }
        };
        if new && self.addresses.len() > MAX_ADDRESSES {
            // More addresses within two seconds than we keep: forget them all. Their per-address
            // terms restart at zero; the room ratio still counts every one of them.
            self.addresses.clear();
        }
    }

    /// The work a request for a new place from `client` needs now (leading zero bits), or
    /// `None` when it needs none (`off`, or `adaptive` without pressure). `admit_per_minute` is
    /// the admission rate in force. Reads only; [`Pressure::record`] counts the request.
    pub fn difficulty(
        &self,
        client: IpAddr,
        admit_per_minute: u32,
        now_ms: u64,
        policy: PowPolicy,
    ) -> Option<u8> {
        if policy.mode == PowMode::Off {
            return None;
        }
        let address_rate = self.addresses.get(&client).map_or(0.0, |w| w.rate(now_ms));
        bits(
            policy,
            self.room_ratio(admit_per_minute, now_ms),
            address_rate / FREE_JOINS_PER_ADDRESS,
        )
    }

    /// The work asked of an address that made no request of its own: the room's part of
    /// [`Pressure::difficulty`] (the gauge of the difficulty in force).
    pub fn room_difficulty(
        &self,
        admit_per_minute: u32,
        now_ms: u64,
        policy: PowPolicy,
    ) -> Option<u8> {
        if policy.mode == PowMode::Off {
            return None;
        }
        bits(policy, self.room_ratio(admit_per_minute, now_ms), 0.0)
    }

    /// Addresses tracked now (tests: the table stays bounded).
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.len()
    }

    fn room_ratio(&self, admit_per_minute: u32, now_ms: u64) -> f64 {
        let rate = self
            .room
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate(now_ms);
        let admit = (f64::from(admit_per_minute) / 60.0).max(MIN_ADMIT_PER_SECOND);
        rate / admit
    }
}

/// The rule of the module doc: `None` for no work, else the clamped bits.
fn bits(policy: PowPolicy, room_ratio: f64, address_ratio: f64) -> Option<u8> {
    let pressed = room_ratio > 1.0 || address_ratio > 1.0;
    match policy.mode {
        PowMode::Off => return None,
        PowMode::Adaptive if !pressed => return None,
        PowMode::Adaptive | PowMode::Always => {}
    }
    // ⌊log2 r⌋ for r > 1; ratios are finite and far below 2^32, the cast only truncates.
    let extra = |r: f64| if r > 1.0 { r.log2().floor() as u32 } else { 0 };
    let wanted = u32::from(policy.min_bits) + extra(room_ratio) + extra(address_ratio);
    let max = policy.max_bits.max(policy.min_bits);
    Some(u8::try_from(wanted.min(u32::from(max))).unwrap_or(max))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000;

    fn policy(mode: PowMode) -> PowPolicy {
        PowPolicy {
            mode,
            min_bits: 8,
            max_bits: 20,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn off_never_always_at_least_the_floor_adaptive_only_under_pressure() {
        let p = Pressure::new();
        let a = ip("203.0.113.1");
        assert_eq!(p.difficulty(a, 600, T0, policy(PowMode::Off)), None);
        assert_eq!(p.difficulty(a, 600, T0, policy(PowMode::Adaptive)), None);
        assert_eq!(p.difficulty(a, 600, T0, policy(PowMode::Always)), Some(8));
        // One shopper joining, then joining again with the answer: no pressure.
        p.record(a, T0);
        p.record(a, T0 + 300);
        assert_eq!(
            p.difficulty(a, 600, T0 + 400, policy(PowMode::Adaptive)),
            None
        );
        assert_eq!(
            p.room_difficulty(600, T0 + 400, policy(PowMode::Adaptive)),
            None
        );
    }

    #[test]
    fn a_flood_from_one_address_raises_the_work_and_it_falls_when_the_flood_ends() {
        let p = Pressure::new();
        let (flooder, other) = (ip("198.51.100.9"), ip("192.0.2.44"));
        let adaptive = policy(PowMode::Adaptive);
        // 60 admissions a minute: one a second.
        let mut last = None;
        let mut seen = Vec::new();
        for i in 0..200u64 {
            let now = T0 + i * 5; // 200 requests a second
            p.record(flooder, now);
            let d = p.difficulty(flooder, 60, now, adaptive);
            assert!(
                d >= last,
                "difficulty fell during the flood: {d:?} after {last:?}"
            );
            last = d;
            seen.push(d);
        }
        let now = T0 + 1000;
        let flooded = p.difficulty(flooder, 60, now, adaptive).unwrap();
        // Room ratio ~200 (+7) and address ratio ~100 (+6): clamped at the ceiling of 20.
        assert_eq!(flooded, 20, "{seen:?}");
        // Another address pays only the room's part, and the gauge says the same.
        let bystander = p.difficulty(other, 60, now, adaptive).unwrap();
        assert!(bystander > 8 && bystander < flooded, "{bystander}");
        assert_eq!(p.room_difficulty(60, now, adaptive), Some(bystander));
        // A room that admits 100 a second barely notices the same flood from elsewhere.
        assert_eq!(p.difficulty(other, 6000, now, adaptive), Some(9));

        // The flood stops: within two seconds nothing is asked any more.
        assert!(p.difficulty(flooder, 60, now + 500, adaptive).unwrap() < flooded);
        assert_eq!(p.difficulty(flooder, 60, T0 + 2_000, adaptive), None);
        assert_eq!(p.room_difficulty(60, T0 + 2_000, adaptive), None);
        assert_eq!(
            p.difficulty(flooder, 60, T0 + 2_000, policy(PowMode::Always)),
            Some(8)
        );
    }

    #[test]
    fn the_sliding_window_weighs_the_previous_second() {
        let mut w = Window::default();
        for _ in 0..10 {
            w.add(T0 + 900);
        }
        assert_eq!(w.rate(T0 + 999), 10.0);
        assert!((w.rate(T0 + 1_500) - 5.0).abs() < 1e-9);
        w.add(T0 + 1_500);
        assert!((w.rate(T0 + 1_500) - 6.0).abs() < 1e-9);
        assert_eq!(w.rate(T0 + 3_000), 0.0);
        w.add(T0 + 5_000);
        assert_eq!(w.rate(T0 + 5_000), 1.0);
    }

    #[test]
    fn the_address_table_stays_bounded() {
        let p = Pressure::new();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            p.record(IpAddr::from(i.to_be_bytes()), T0);
        }
        assert!(p.tracked_addresses() <= MAX_ADDRESSES);
        // Idle addresses are swept once their window has passed.
        p.record(ip("10.0.0.1"), T0 + 1_000);
        p.record(ip("10.0.0.1"), T0 + 5_000);
        assert_eq!(p.tracked_addresses(), 1);
    }
}
