//! A room's timeline: not yet open → pre-queue → open → ended (or closed by mode), from its
//! configured times; a pure function of the config and `now`, so every node agrees.

use time::OffsetDateTime;

use crate::config::{RoomConfig, RoomMode};

/// Where a room stands on its timeline at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Mode `closed`: no joins, no admissions.
    Closed,
    /// Before the pre-queue (or, without one, before the opening): joins are answered `closed`
    /// with the opening time.
    NotYetOpen,
    /// The pre-queue window: arrivals wait on a countdown, unordered until the opening.
    Prequeue,
    /// Open (also every room without a schedule).
    Open,
    /// After `closes_at`: no new places; places already held are served.
    Ended,
}

impl Phase {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::NotYetOpen => "scheduled",
            Phase::Prequeue => "prequeue",
            Phase::Open => "open",
            Phase::Ended => "ended",
        }
    }
}

/// A room's mode and schedule, times in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// How arrivals are let in.
    pub mode: RoomMode,
    /// When the pre-queue opens (only with `opens_at`).
    pub prequeue_opens_at: Option<u64>,
    /// When the room opens.
    pub opens_at: Option<u64>,
    /// When the room stops making places.
    pub closes_at: Option<u64>,
}

impl Schedule {
    /// The schedule of a room's (validated) settings.
    pub fn of(config: &RoomConfig) -> Schedule {
        Schedule {
            mode: config.mode,
            prequeue_opens_at: config.opens_at.and(config.prequeue_opens_at).map(unix_ms),
            opens_at: config.opens_at.map(unix_ms),
            closes_at: config.closes_at.map(unix_ms),
        }
    }

    /// The phase at `now_ms` (by this node's clock).
    pub fn phase(&self, now_ms: u64) -> Phase {
        if self.mode == RoomMode::Closed {
            return Phase::Closed;
        }
        if self.closes_at.is_some_and(|c| now_ms >= c) {
            return Phase::Ended;
        }
        match (self.prequeue_opens_at, self.opens_at) {
            (_, Some(opens)) if now_ms >= opens => Phase::Open,
            (Some(pre), Some(_)) if now_ms >= pre => Phase::Prequeue,
            (_, Some(_)) => Phase::NotYetOpen,
            _ => Phase::Open,
        }
    }
}

/// Milliseconds since the Unix epoch (0 for earlier times).
pub fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// RFC 3339 text of a time in ms since the epoch (UTC, second precision kept as given).
pub fn rfc3339(ms: u64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_schedule() {
        let s = Schedule {
            mode: RoomMode::Queue,
            prequeue_opens_at: Some(100),
            opens_at: Some(200),
            closes_at: Some(300),
        };
        assert_eq!(s.phase(99), Phase::NotYetOpen);
        assert_eq!(s.phase(100), Phase::Prequeue);
        assert_eq!(s.phase(200), Phase::Open);
        assert_eq!(s.phase(300), Phase::Ended);
        let no_pre = Schedule {
            prequeue_opens_at: None,
            ..s
        };
        assert_eq!(no_pre.phase(150), Phase::NotYetOpen);
        let closed = Schedule {
            mode: RoomMode::Closed,
            ..s
        };
        assert_eq!(closed.phase(250), Phase::Closed);
        let unscheduled = Schedule {
            mode: RoomMode::SafetyNet,
            prequeue_opens_at: None,
            opens_at: None,
            closes_at: None,
        };
        assert_eq!(unscheduled.phase(0), Phase::Open);
    }
}
