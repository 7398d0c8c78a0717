//! A node's cached copy of a room's shared state, and the position arithmetic that answers a
//! poll from it with no store call.
//!
//! Position of waiter `seq` = `seq − served − (departures with served < s < seq)`. The watermark
//! `served` and the set of departures only grow, so a waiter's position computed from successive
//! snapshots can only fall. Departures past the watermark are a bitmap copied from the store;
//! a prefix-sum over its 64-bit words makes each count O(1).

use std::sync::Arc;
use std::time::Instant;

use super::message::RoomMessage;
use crate::store::{GoneBits, RoomState, RoomStatus};

/// Where a ticket's sequence number stands in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// Still waiting, 1-based among live waiters.
    Waiting {
        /// 1 = next to be admitted.
        position: u64,
    },
    /// At or behind the watermark: admitted, or evicted at the head. Only the store knows which.
    PastHead,
    /// Left or was evicted.
    Gone,
}

/// Departure bits from `base_bit` on, with prefix sums.
#[derive(Debug, Clone, Default)]
struct Departures {
    base_bit: u64,
    /// Big-endian 64-bit words: bit 0 of the bitmap is the most significant bit of word 0.
    words: Vec<u64>,
    /// `prefix[i]` = set bits in `words[..i]`.
    prefix: Vec<u32>,
}

impl Departures {
    fn from_bits(gone: &GoneBits) -> Self {
        let words: Vec<u64> = gone
            .bytes
            .chunks(8)
            .map(|chunk| {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                u64::from_be_bytes(w)
            })
            .collect();
        let mut prefix = Vec::with_capacity(words.len());
        let mut total = 0u32;
        for w in &words {
            prefix.push(total);
            total += w.count_ones();
        }
        Self {
            base_bit: gone.base_byte * 8,
            words,
            prefix,
        }
    }

    /// Set bits for seqs in `[base_bit, seq)`.
    fn count_before(&self, seq: u64) -> u64 {
        let Some(off) = seq.checked_sub(self.base_bit) else {
            return 0;
        };
        let (w, b) = ((off / 64) as usize, off % 64);
        match (self.words.get(w), self.prefix.get(w)) {
            (Some(word), Some(&before)) => {
                let partial = if b == 0 {
                    0
                } else {
                    (word >> (64 - b)).count_ones()
                };
                u64::from(before) + u64::from(partial)
            }
            _ => {
                let last = self.words.len().saturating_sub(1);
                match (self.words.last(), self.prefix.get(last)) {
                    (Some(word), Some(&before)) => u64::from(before) + u64::from(word.count_ones()),
                    _ => 0,
                }
            }
        }
    }

    fn is_set(&self, seq: u64) -> bool {
        let Some(off) = seq.checked_sub(self.base_bit) else {
            return false;
        };
        self.words
            .get((off / 64) as usize)
            .is_some_and(|w| (w >> (63 - off % 64)) & 1 == 1)
    }
}

/// Admission rates (per second) that ETAs are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Typical rate: the ETA's p50.
    pub p50: f64,
    /// Slow rate: the ETA's p90.
    pub p90: f64,
}

/// The part of a snapshot a waiter's place depends on ([`Snapshot::view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotView {
    served: u64,
    departed: u64,
    status: RoomStatus,
    admit_per_minute: u32,
    max_active: u32,
    revoked_total: u64,
    prequeue: crate::store::PrequeueState,
    message_version: u64,
}

/// A room's state as this node last read it. Immutable; replaced whole on every refresh.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Counts and watermark from the store (its `gone` field is not kept here).
    pub state: RoomState,
    /// Admission rates for ETAs.
    pub rates: Rates,
    /// When this node read it; `None` before the first successful refresh.
    pub taken_at: Option<Instant>,
    departures: Departures,
    /// Departure count the bitmap reflects.
    departed: Option<u64>,
    /// The live message this node last read, and the version it read (0: none yet).
    message: Option<Arc<RoomMessage>>,
    message_version: u64,
}

impl Snapshot {
    /// The snapshot before the first refresh: nothing served, no departures known.
    pub fn empty() -> Self {
        Self {
            state: RoomState {
                served: 0,
                last_seq: 0,
                waiting: 0,
                active: 0,
                admitted_total: 0,
                evicted_total: 0,
                left_total: 0,
                status: RoomStatus::Open,
                gone: None,
                ..RoomState::default()
            },
            rates: Rates::default(),
            taken_at: None,
            departures: Departures::default(),
            departed: None,
            message: None,
            message_version: 0,
        }
    }

    /// Builds the next snapshot from a tick's state, reusing this one's departure bitmap when the
    /// store did not send a new one (departures unchanged).
    pub fn next(&self, mut state: RoomState, rates: Rates) -> Snapshot {
        let (departures, departed) = match state.gone.take() {
            Some(bits) => (Departures::from_bits(&bits), Some(state.departed())),
            None => (self.departures.clone(), self.departed),
        };
        Snapshot {
            state,
            rates,
            taken_at: Some(Instant::now()),
            departures,
            departed,
            message: self.message.clone(),
            message_version: self.message_version,
        }
    }

    /// Whether the store holds a live message of another version than this snapshot's (read
    /// it with [`crate::store::Store::message`] and keep it with [`Snapshot::learn_message`]).
    pub fn message_is_stale(&self) -> bool {
        self.state.message_version != self.message_version
    }

    /// Keeps the live message of `version` (`None`: none, or none this node can read).
    pub fn learn_message(&mut self, version: u64, message: Option<RoomMessage>) {
        self.message = message.filter(|m| !m.is_empty()).map(Arc::new);
        self.message_version = version;
    }

    /// What a waiter sees of this state, as far as it can change between two refreshes: two
    /// snapshots with the same view show every waiter the same place (but for the ETA's slow
    /// drift with the measured rate).
    pub fn view(&self) -> SnapshotView {
        let s = &self.state;
        SnapshotView {
            served: s.served,
            departed: s.departed(),
            status: s.status,
            admit_per_minute: s.admit_per_minute,
            max_active: s.max_active,
            revoked_total: s.revoked_total,
            prequeue: s.prequeue,
            message_version: self.message_version,
        }
    }

    /// The operator's live message, when one is set (it replaces the configured one).
    pub fn live_message(&self) -> Option<&RoomMessage> {
        self.message.as_deref()
    }

    /// The departure count this snapshot's bitmap reflects (pass to the next tick).
    pub fn known_departed(&self) -> Option<u64> {
        self.departed
    }

    /// Where waiter `seq` stands. Never needs the store.
    pub fn locate(&self, seq: u64) -> Located {
        self.locate_with_floor(seq, 0)
    }

    /// [`Snapshot::locate`] with the watermark raised to at least `served_floor` (admissions this
    /// node made since the snapshot was taken). Still monotone: the floor only grows.
    pub fn locate_with_floor(&self, seq: u64, served_floor: u64) -> Located {
        let served = self.state.served.max(served_floor);
        if seq <= served {
            return Located::PastHead;
        }
        if self.departures.is_set(seq) {
            return Located::Gone;
        }
        let between = self
            .departures
            .count_before(seq)
            .saturating_sub(self.departures.count_before(served + 1));
        Located::Waiting {
            position: (seq - served).saturating_sub(between).max(1),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn state(served: u64, last: u64, gone_seqs: &[u64]) -> RoomState {
        let base_byte = (served + 1) / 8;
        let mut bytes = vec![0u8; (last / 8 - base_byte + 1) as usize];
        for &s in gone_seqs {
            let i = (s / 8 - base_byte) as usize;
            bytes[i] |= 0x80 >> (s % 8);
        }
        RoomState {
            served,
            last_seq: last,
            waiting: 0,
            active: 0,
            admitted_total: 0,
            evicted_total: gone_seqs.len() as u64,
            left_total: 0,
            status: RoomStatus::Open,
            gone: Some(GoneBits {
                base_byte,
                bytes: Bytes::from(bytes),
            }),
            ..RoomState::default()
        }
    }

    #[test]
    fn position_skips_departures_between_head_and_seq() {
        let snap =
            Snapshot::empty().next(state(10, 300, &[12, 13, 100, 200, 299]), Rates::default());
        assert_eq!(snap.locate(5), Located::PastHead);
        assert_eq!(snap.locate(11), Located::Waiting { position: 1 });
        assert_eq!(snap.locate(14), Located::Waiting { position: 2 });
        assert_eq!(snap.locate(100), Located::Gone);
        assert_eq!(
            snap.locate(150),
            Located::Waiting {
                position: 150 - 10 - 3
            }
        );
        assert_eq!(
            snap.locate(300),
            Located::Waiting {
                position: 300 - 10 - 5
            }
        );
        // Past the copied range: departures there are unknown, so the count is conservative.
        assert_eq!(
            snap.locate(1000),
            Located::Waiting {
                position: 1000 - 10 - 5
            }
        );
    }

    #[test]
    fn brute_force_agrees_on_every_seq() {
        let gone: Vec<u64> = (0..2000)
            .filter(|s| s % 7 == 3 || s % 64 == 0)
            .filter(|s| *s > 37)
            .collect();
        let snap = Snapshot::empty().next(state(37, 2000, &gone), Rates::default());
        for seq in 38..=2000u64 {
            let expected = if gone.contains(&seq) {
                Located::Gone
            } else {
                let between = gone.iter().filter(|&&g| g > 37 && g < seq).count() as u64;
                Located::Waiting {
                    position: seq - 37 - between,
                }
            };
            assert_eq!(snap.locate(seq), expected, "seq {seq}");
        }
    }

    #[test]
    fn unchanged_departures_keep_the_old_bitmap() {
        let first = Snapshot::empty().next(state(10, 100, &[50]), Rates::default());
        let mut later = state(20, 120, &[50]);
        later.gone = None;
        let second = first.next(later, Rates::default());
        assert_eq!(second.locate(50), Located::Gone);
        assert_eq!(
            second.locate(60),
            Located::Waiting {
                position: 60 - 20 - 1
            }
        );
        assert_eq!(second.known_departed(), Some(1));
    }
}
