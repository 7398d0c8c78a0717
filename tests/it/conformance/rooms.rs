//! The `Store` trait (rooms): joining, pacing, liveness, sessions, leaving, lifecycle, gone bits
//! and stock-aware admission, with time driven explicitly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use rushgate::id::RoomId;
use rushgate::store::{
    GoneBits, JoinOutcome, LeaveOutcome, RoomParams, RoomState, RoomStatus, Store,
};

use super::{room_id, t0};
use crate::both_stores;

const IDLE: u64 = 60_000;
const INTERVAL: u64 = 6_000;
const SESSION: u64 = 600_000;

/// Fast pacing, many slots, 60 s idle timeout in 6 s intervals, 10 min sessions, no sale.
fn params() -> RoomParams {
    RoomParams {
        admit_per_minute: 60_000,
        max_active: 1_000,
        burst: 1_000,
        idle_ms: IDLE,
        interval_ms: INTERVAL,
        session_ms: SESSION,
        admit_cap: None,
        prequeue_until_ms: None,
        instant: true,
        hold: false,
    }
}

fn waiting(seq: u64, created: bool) -> JoinOutcome {
    JoinOutcome::Waiting { seq, created }
}

fn admitted(seq: u64, created: bool) -> JoinOutcome {
    JoinOutcome::Admitted { seq, created }
}

async fn join(s: &dyn Store, room: &RoomId, who: &str, p: &RoomParams, now: u64) -> JoinOutcome {
    s.join(room, who, false, p, now).await.unwrap()
}

/// A tick that always asks for the gone bitmap.
async fn tick(s: &dyn Store, room: &RoomId, p: &RoomParams, now: u64) -> RoomState {
    s.tick(room, p, now, None).await.unwrap()
}

async fn claim(s: &dyn Store, room: &RoomId, who: &str, p: &RoomParams, now: u64) -> Option<u64> {
    s.claim(room, who, p, now).await.unwrap()
}

/// Records `seqs` as seen during the interval containing `now` (what a node's poll batch does).
async fn seen(s: &dyn Store, room: &RoomId, p: &RoomParams, now: u64, seqs: &[u64]) {
    s.mark_alive(room, p, p.interval_of(now), seqs)
        .await
        .unwrap();
}

/// (served, last_seq, waiting, active, admitted_total, evicted_total, left_total)
fn counts(st: &RoomState) -> (u64, u64, u64, u64, u64, u64, u64) {
    (
        st.served,
        st.last_seq,
        st.waiting,
        st.active,
        st.admitted_total,
        st.evicted_total,
        st.left_total,
    )
}

both_stores!(rooms:
    join_assigns_increasing_seqs_and_keeps_places,
    fast_path_needs_empty_queue_free_slot_and_token,
    max_active_is_never_exceeded,
    admission_is_fifo_in_seq_order,
    token_bucket_paces_admissions,
    idle_head_is_evicted_and_skipped,
    mark_alive_and_rejoin_keep_a_waiter_alive,
    claim_starts_a_session_once,
    session_expiry_frees_the_slot,
    leave_gives_up_places_and_sessions,
    gone_bits_only_when_departures_changed,
    closed_and_paused_rooms,
    admit_cap_limits_non_buying_sessions,
    admit_cap_on_the_fast_path_and_zero_cap,
    buying_record_ends_with_the_session,
    live_message_changes_with_its_version,
);

both_stores!(shared_rooms: concurrent_joins_form_one_line);

async fn join_assigns_increasing_seqs_and_keeps_places(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        max_active: 1,
        ..params()
    };
    let t = t0();
    assert_eq!(join(s, &room, "first", &p, t).await, admitted(1, true));
    for (i, who) in ["a", "b", "c"].into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(join(s, &room, who, &p, t + i).await, waiting(i + 2, true));
    }
    // Repeats keep their place (or admission) and take no sequence number.
    assert_eq!(join(s, &room, "b", &p, t + 10).await, waiting(3, false));
    assert_eq!(join(s, &room, "a", &p, t + 11).await, waiting(2, false));
    assert_eq!(join(s, &room, "c", &p, t + 12).await, waiting(4, false));
    assert_eq!(
        join(s, &room, "first", &p, t + 13).await,
        admitted(0, false)
    );
    assert_eq!(join(s, &room, "d", &p, t + 14).await, waiting(5, true));

    let st = tick(s, &room, &p, t + 20).await;
    assert_eq!(counts(&st), (1, 5, 4, 1, 1, 0, 0));
    assert_eq!(st.status, RoomStatus::Open);
    assert_eq!(st.gone, Some(GoneBits::default()));
    assert_eq!(st.departed(), 0);
}

async fn fast_path_needs_empty_queue_free_slot_and_token(s: &dyn Store) {
    let room = room_id();
    // One token a second, a bucket of one, two slots.
    let p = RoomParams {
        admit_per_minute: 60,
        burst: 1,
        max_active: 2,
        ..params()
    };
    let t = t0();
    // Empty queue, free slot, full bucket: admitted at once.
    assert_eq!(join(s, &room, "a", &p, t).await, admitted(1, true));
    // No token left.
    assert_eq!(join(s, &room, "b", &p, t).await, waiting(2, true));
    // The bucket refilled, but someone waits: no overtaking.
    assert_eq!(join(s, &room, "c", &p, t + 5_000).await, waiting(3, true));
    let st = tick(s, &room, &p, t + 5_000).await;
    assert_eq!(counts(&st), (2, 3, 1, 2, 2, 0, 0));
    assert!(claim(s, &room, "b", &p, t + 5_000).await.is_some());
    // A token, but no free slot.
    let st = tick(s, &room, &p, t + 10_000).await;
    assert_eq!(counts(&st), (2, 3, 1, 2, 2, 0, 0));
    assert_eq!(s.leave(&room, "c").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(join(s, &room, "d", &p, t + 10_000).await, waiting(4, true));
    // Empty queue, a free slot and the token saved by the last tick: admitted at once.
    assert_eq!(
        s.leave(&room, "a").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    assert_eq!(s.leave(&room, "d").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(join(s, &room, "e", &p, t + 10_000).await, admitted(5, true));
    // The fast-path admission's claim window is the idle timeout.
    assert_eq!(claim(s, &room, "e", &p, t + 10_000 + IDLE).await, None);
    let st = tick(s, &room, &p, t + 10_000).await;
    assert_eq!(counts(&st), (5, 5, 0, 2, 3, 0, 3));
}

async fn max_active_is_never_exceeded(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        max_active: 5,
        ..params()
    };
    let t = t0();
    for i in 1..=20u64 {
        let want = if i <= 5 {
            admitted(i, true)
        } else {
            waiting(i, true)
        };
        assert_eq!(join(s, &room, &format!("w{i}"), &p, t).await, want);
    }
    let all: Vec<u64> = (1..=20).collect();
    for k in 1..=10u64 {
        let now = t + k * 1_000;
        let st = tick(s, &room, &p, now).await;
        assert_eq!(counts(&st), (5, 20, 15, 5, 5, 0, 0), "tick {k}");
    }
    // Two leave: exactly two more get in, the next in line.
    assert_eq!(
        s.leave(&room, "w1").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    assert_eq!(
        s.leave(&room, "w4").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    let st = tick(s, &room, &p, t + 11_000).await;
    assert_eq!(counts(&st), (7, 20, 13, 5, 7, 0, 2));
    assert!(claim(s, &room, "w7", &p, t + 11_000).await.is_some());
    assert_eq!(claim(s, &room, "w8", &p, t + 11_000).await, None);
    // The fast-path admissions' claim windows (t + idle) end: their slots go to waiters, still
    // never more than five at once.
    seen(s, &room, &p, t + 50_000, &all).await;
    let st = tick(s, &room, &p, t + IDLE).await;
    assert_eq!(counts(&st), (10, 20, 10, 5, 10, 0, 2));
    let st = tick(s, &room, &p, t + IDLE + 1_000).await;
    assert_eq!(counts(&st), (10, 20, 10, 5, 10, 0, 2));
}

async fn admission_is_fifo_in_seq_order(s: &dyn Store) {
    let room = room_id();
    // One admission a second, no burst.
    let p = RoomParams {
        admit_per_minute: 60,
        burst: 1,
        ..params()
    };
    let t = t0();
    assert_eq!(join(s, &room, "head", &p, t).await, admitted(1, true));
    // Join in a scrambled name order: the sequence number, not the name, decides.
    let names = ["m", "c", "x", "a", "q", "b", "z", "k", "e", "d"];
    for (i, who) in names.iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t + i as u64).await,
            waiting(i as u64 + 2, true)
        );
    }
    for (i, who) in names.iter().enumerate() {
        let now = t + (i as u64 + 1) * 1_000;
        assert_eq!(claim(s, &room, who, &p, now).await, None, "{who} early");
        let st = tick(s, &room, &p, now).await;
        assert_eq!(st.served, i as u64 + 2, "tick {i}");
        assert_eq!(st.admitted_total, i as u64 + 2);
        assert_eq!(st.waiting, (names.len() - i - 1) as u64);
        assert_eq!(
            claim(s, &room, who, &p, now).await,
            Some(now + SESSION),
            "{who} admitted in turn"
        );
        for later in &names[i + 1..] {
            assert_eq!(
                claim(s, &room, later, &p, now).await,
                None,
                "{later} overtook"
            );
        }
    }
}

async fn token_bucket_paces_admissions(s: &dyn Store) {
    let room = room_id();
    // 180 a minute = 3 a second, at most 3 at once.
    let p = RoomParams {
        admit_per_minute: 180,
        burst: 3,
        ..params()
    };
    let t = t0();
    // A fresh bucket is full: the first three get in at once.
    for i in 1..=40u64 {
        let want = if i <= 3 {
            admitted(i, true)
        } else {
            waiting(i, true)
        };
        assert_eq!(join(s, &room, &format!("w{i}"), &p, t).await, want);
    }
    // Ticks every 100 ms for 10 s: 0.3 tokens each, so floor(0.3 k) admissions after k ticks.
    for k in 1..=100u64 {
        let st = tick(s, &room, &p, t + 100 * k).await;
        assert_eq!(
            st.admitted_total,
            3 + 3 * k / 10,
            "tick {k} at +{} ms",
            100 * k
        );
        assert_eq!(st.waiting, 37 - 3 * k / 10);
        assert!(st.active <= 33);
    }
    // A minute without ticks: the bucket holds at most `burst`.
    let later = t + 70_000;
    let waiters: Vec<u64> = (34..=40).collect();
    seen(s, &room, &p, later, &waiters).await;
    let st = tick(s, &room, &p, later).await;
    assert_eq!(st.admitted_total, 36);
    let st = tick(s, &room, &p, later).await;
    assert_eq!(st.admitted_total, 36);
    // 333 ms are 0.999 tokens, 334 ms are 1.002.
    let st = tick(s, &room, &p, later + 333).await;
    assert_eq!(st.admitted_total, 36);
    let st = tick(s, &room, &p, later + 334).await;
    assert_eq!(st.admitted_total, 37);
    assert_eq!(counts(&st).2, 3);
    // A node whose clock is behind neither refills nor moves the bucket's time back.
    let st = tick(s, &room, &p, later).await;
    assert_eq!(st.admitted_total, 37);
    let st = tick(s, &room, &p, later + 334 + 332).await;
    assert_eq!(st.admitted_total, 37);
    let st = tick(s, &room, &p, later + 334 + 333).await;
    assert_eq!(st.admitted_total, 38);
}

async fn idle_head_is_evicted_and_skipped(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        burst: 2,
        ..params()
    };
    let t = t0();
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    for (i, who) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            waiting(i as u64 + 1, true)
        );
    }
    // Past the idle timeout only b, d, e, f are still polling.
    let now = t + 70_000;
    seen(s, &room, &p, now, &[2, 4, 5, 6]).await;
    s.set_status(&room, RoomStatus::Open).await.unwrap();
    let st = tick(s, &room, &p, now).await;
    // a and c are evicted at the head without using a token; b and d use the two.
    assert_eq!(counts(&st), (4, 6, 2, 2, 2, 2, 0));
    assert_eq!(st.departed(), 2);
    assert!(claim(s, &room, "b", &p, now).await.is_some());
    assert!(claim(s, &room, "d", &p, now).await.is_some());
    assert_eq!(claim(s, &room, "a", &p, now).await, None);
    assert_eq!(claim(s, &room, "c", &p, now).await, None);
    // The evicted hold nothing; one that comes back queues at the end.
    assert_eq!(s.leave(&room, "a").await.unwrap(), LeaveOutcome::Absent);
    assert_eq!(join(s, &room, "c", &p, now).await, waiting(7, true));
    // Admissions behind go on at the paced rate (1 token per ms here).
    let st = tick(s, &room, &p, now + 1).await;
    assert_eq!(counts(&st), (5, 7, 2, 3, 3, 2, 0));
    assert!(claim(s, &room, "e", &p, now + 1).await.is_some());
    let st = tick(s, &room, &p, now + 3).await;
    assert_eq!(counts(&st), (7, 7, 0, 5, 5, 2, 0));
}

async fn mark_alive_and_rejoin_keep_a_waiter_alive(s: &dyn Store) {
    let room = room_id();
    let p = params();
    let t = t0();
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    for (i, who) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            waiting(i as u64 + 1, true)
        );
    }
    let now = t + 120_000;
    let cur = p.interval_of(now);
    let span = IDLE / INTERVAL;
    // a: seen every 30 s by polls.
    for at in [30_000, 60_000, 90_000] {
        seen(s, &room, &p, t + at, &[1]).await;
    }
    // b: never seen after joining. c: joins again (a repeat marks it seen).
    assert_eq!(
        join(s, &room, "c", &p, t + 100_000).await,
        waiting(3, false)
    );
    // d: last seen exactly `span` intervals ago (still within the idle timeout);
    // e: one interval earlier than that (idle too long).
    s.mark_alive(&room, &p, cur - span, &[4]).await.unwrap();
    s.mark_alive(&room, &p, cur - span - 1, &[5]).await.unwrap();
    s.set_status(&room, RoomStatus::Open).await.unwrap();
    let st = tick(s, &room, &p, now).await;
    assert_eq!(counts(&st), (5, 5, 0, 3, 3, 2, 0));
    for who in ["a", "c", "d"] {
        assert_eq!(
            claim(s, &room, who, &p, now).await,
            Some(now + SESSION),
            "{who}"
        );
    }
    for who in ["b", "e"] {
        assert_eq!(claim(s, &room, who, &p, now).await, None, "{who}");
    }
}

async fn claim_starts_a_session_once(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        max_active: 3,
        ..params()
    };
    let t = t0();
    for (i, who) in ["a", "b", "d"].into_iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            admitted(i as u64 + 1, true)
        );
    }
    assert_eq!(join(s, &room, "c", &p, t).await, waiting(4, true));
    // Not admitted, or unknown: nothing to claim.
    assert_eq!(claim(s, &room, "c", &p, t).await, None);
    assert_eq!(claim(s, &room, "nobody", &p, t).await, None);
    // The first claim starts the session; later claims return the same expiry.
    let expiry = t + 1_000 + SESSION;
    assert_eq!(claim(s, &room, "a", &p, t + 1_000).await, Some(expiry));
    assert_eq!(claim(s, &room, "a", &p, t + 5_000).await, Some(expiry));
    assert_eq!(claim(s, &room, "a", &p, t + 50_000).await, Some(expiry));
    // The claim window of a fast-path admission ends at join + idle timeout.
    assert_eq!(
        claim(s, &room, "b", &p, t + IDLE - 1).await,
        Some(t + IDLE - 1 + SESSION)
    );
    assert_eq!(claim(s, &room, "d", &p, t + IDLE).await, None);
    // d's lapsed slot goes to c; a tick-admitted waiter's window runs from when it was last
    // seen: (interval + 1) * interval_ms + idle, at least one interval from now.
    let st = tick(s, &room, &p, t + IDLE).await;
    assert_eq!(counts(&st), (4, 4, 0, 3, 4, 0, 0));
    let deadline = (p.interval_of(t) + 1) * INTERVAL + IDLE;
    assert_eq!(deadline, t + IDLE + INTERVAL);
    assert_eq!(claim(s, &room, "c", &p, deadline).await, None);
    assert_eq!(claim(s, &room, "d", &p, t + IDLE).await, None);
    // The session ends at its expiry.
    assert_eq!(claim(s, &room, "a", &p, expiry - 1).await, Some(expiry));
    assert_eq!(claim(s, &room, "a", &p, expiry).await, None);
}

async fn session_expiry_frees_the_slot(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        max_active: 1,
        ..params()
    };
    let t = t0();
    assert_eq!(join(s, &room, "a", &p, t).await, admitted(1, true));
    assert_eq!(claim(s, &room, "a", &p, t).await, Some(t + SESSION));
    assert_eq!(join(s, &room, "b", &p, t).await, waiting(2, true));
    // b keeps polling; the slot stays taken until a's session ends.
    let before = t + SESSION - 1;
    seen(s, &room, &p, before, &[2]).await;
    let st = tick(s, &room, &p, before).await;
    assert_eq!(counts(&st), (1, 2, 1, 1, 1, 0, 0));
    assert_eq!(join(s, &room, "a", &p, before).await, admitted(0, false));
    let end = t + SESSION;
    let st = tick(s, &room, &p, end).await;
    assert_eq!(counts(&st), (2, 2, 0, 1, 2, 0, 0));
    assert_eq!(claim(s, &room, "a", &p, end).await, None);
    assert_eq!(claim(s, &room, "b", &p, end).await, Some(end + SESSION));
    // a ended: a new join is a new place.
    assert_eq!(join(s, &room, "a", &p, end).await, waiting(3, true));
    // An expired session is not an admission any more (join sweeps it too).
    assert_eq!(
        join(s, &room, "b", &p, end + SESSION).await,
        waiting(4, true)
    );
}

async fn leave_gives_up_places_and_sessions(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        max_active: 1,
        ..params()
    };
    let t = t0();
    assert_eq!(join(s, &room, "a", &p, t).await, admitted(1, true));
    for (i, who) in ["b", "c", "d"].into_iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            waiting(i as u64 + 2, true)
        );
    }
    // A waiting place: given up, its gone bit (seq 3) set.
    assert_eq!(s.leave(&room, "c").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(s.leave(&room, "c").await.unwrap(), LeaveOutcome::Absent);
    let st = tick(s, &room, &p, t + 1).await;
    assert_eq!(counts(&st), (1, 4, 2, 1, 1, 0, 1));
    assert_eq!(
        st.gone,
        Some(GoneBits {
            base_byte: 0,
            bytes: Bytes::from_static(&[0b0001_0000]),
        })
    );
    // An admitted session: ended, slot freed, nothing left to claim.
    assert_eq!(
        s.leave(&room, "a").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    assert_eq!(claim(s, &room, "a", &p, t + 2).await, None);
    assert_eq!(s.leave(&room, "a").await.unwrap(), LeaveOutcome::Absent);
    assert_eq!(
        s.leave(&room, "nobody").await.unwrap(),
        LeaveOutcome::Absent
    );
    // b gets the slot; c is skipped (it left), d waits for the next one.
    let st = tick(s, &room, &p, t + 2).await;
    assert_eq!(counts(&st), (2, 4, 1, 1, 2, 0, 2));
    assert!(claim(s, &room, "b", &p, t + 2).await.is_some());
    assert_eq!(
        s.leave(&room, "b").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    let st = tick(s, &room, &p, t + 3).await;
    assert_eq!(counts(&st), (4, 4, 0, 1, 3, 0, 3));
    assert!(claim(s, &room, "d", &p, t + 3).await.is_some());
    assert_eq!(claim(s, &room, "c", &p, t + 3).await, None);
}

async fn gone_bits_only_when_departures_changed(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        burst: 8,
        ..params()
    };
    let t = t0();
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    for i in 1..=20u64 {
        assert_eq!(
            join(s, &room, &format!("w{i}"), &p, t).await,
            waiting(i, true)
        );
    }
    let st = s.tick(&room, &p, t, Some(0)).await.unwrap();
    assert_eq!(
        st.gone, None,
        "nothing departed: the caller's copy is right"
    );
    assert_eq!(st.status, RoomStatus::Paused);
    let st = s.tick(&room, &p, t, None).await.unwrap();
    assert_eq!(st.gone, Some(GoneBits::default()), "no bits set yet");
    for who in ["w3", "w9", "w17"] {
        assert_eq!(s.leave(&room, who).await.unwrap(), LeaveOutcome::LeftQueue);
    }
    let st = s.tick(&room, &p, t, Some(0)).await.unwrap();
    assert_eq!(
        st.gone,
        Some(GoneBits {
            base_byte: 0,
            bytes: Bytes::from_static(&[0b0001_0000, 0b0100_0000, 0b0100_0000]),
        })
    );
    assert_eq!(st.departed(), 3);
    assert_eq!(s.tick(&room, &p, t, Some(3)).await.unwrap().gone, None);
    // Eight tokens: w1, w2, w4..w8, w10 (w3 and w9 left). served = 10: the bitmap from byte
    // (10 + 1) / 8 = 1 (seqs 8..15) to byte 20 / 8 = 2.
    s.set_status(&room, RoomStatus::Open).await.unwrap();
    let st = s.tick(&room, &p, t, Some(3)).await.unwrap();
    assert_eq!(counts(&st), (10, 20, 9, 8, 8, 0, 3));
    assert_eq!(st.gone, None, "admissions are not departures");
    let st = s.tick(&room, &p, t, Some(2)).await.unwrap();
    assert_eq!(
        st.gone,
        Some(GoneBits {
            base_byte: 1,
            bytes: Bytes::from_static(&[0b0100_0000, 0b0100_0000]),
        })
    );
    // An eviction counts as a departure as well. Seven tokens this time: w11 is evicted, then
    // w12..w16, w18 and w19 take them (the first eight sessions lapsed unclaimed).
    let later = t + 70_000;
    seen(s, &room, &p, later, &[12, 13, 14, 15, 16, 18, 19, 20]).await;
    let seven = RoomParams { burst: 7, ..p };
    let st = s.tick(&room, &seven, later, Some(3)).await.unwrap();
    assert_eq!(counts(&st), (19, 20, 1, 7, 15, 1, 3));
    assert_eq!(
        st.gone,
        Some(GoneBits {
            base_byte: 2,
            bytes: Bytes::from_static(&[0b0100_0000]),
        })
    );
    assert_eq!(s.tick(&room, &p, later, Some(4)).await.unwrap().gone, None);
    // Everyone served: an empty range.
    let st = s.tick(&room, &p, later + 1, None).await.unwrap();
    assert_eq!(counts(&st), (20, 20, 0, 8, 16, 1, 3));
    assert_eq!(
        st.gone,
        Some(GoneBits {
            base_byte: 2,
            bytes: Bytes::new(),
        })
    );
}

async fn closed_and_paused_rooms(s: &dyn Store) {
    let room = room_id();
    let p = params();
    let t = t0();
    // Paused: joins wait even with an empty queue and free slots; nobody is admitted.
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    assert_eq!(join(s, &room, "a", &p, t).await, waiting(1, true));
    assert_eq!(join(s, &room, "b", &p, t).await, waiting(2, true));
    let st = tick(s, &room, &p, t + 1_000).await;
    assert_eq!(st.status, RoomStatus::Paused);
    assert_eq!(counts(&st), (0, 2, 2, 0, 0, 0, 0));
    assert_eq!(claim(s, &room, "a", &p, t + 1_000).await, None);
    // Closed: no joins (not even repeats), no admissions, no sequence numbers used.
    s.set_status(&room, RoomStatus::Closed).await.unwrap();
    assert_eq!(
        join(s, &room, "c", &p, t + 2_000).await,
        JoinOutcome::Closed
    );
    assert_eq!(
        join(s, &room, "a", &p, t + 2_000).await,
        JoinOutcome::Closed
    );
    let st = tick(s, &room, &p, t + 3_000).await;
    assert_eq!(st.status, RoomStatus::Closed);
    assert_eq!(counts(&st), (0, 2, 2, 0, 0, 0, 0));
    // Open again: the waiters are admitted in order, then newcomers get in at once.
    s.set_status(&room, RoomStatus::Open).await.unwrap();
    let st = tick(s, &room, &p, t + 4_000).await;
    assert_eq!(st.status, RoomStatus::Open);
    assert_eq!(counts(&st), (2, 2, 0, 2, 2, 0, 0));
    assert_eq!(join(s, &room, "c", &p, t + 4_000).await, admitted(3, true));
    // Closing keeps admitted sessions, and a paused room still lets them claim.
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    assert_eq!(
        claim(s, &room, "a", &p, t + 5_000).await,
        Some(t + 5_000 + SESSION)
    );
    assert_eq!(join(s, &room, "a", &p, t + 5_000).await, admitted(0, false));
    s.set_status(&room, RoomStatus::Closed).await.unwrap();
    assert_eq!(
        claim(s, &room, "a", &p, t + 6_000).await,
        Some(t + 5_000 + SESSION)
    );
    assert_eq!(
        join(s, &room, "a", &p, t + 6_000).await,
        JoinOutcome::Closed
    );
    let st = tick(s, &room, &p, t + 7_000).await;
    assert_eq!((st.status, st.active), (RoomStatus::Closed, 3));
}

async fn admit_cap_limits_non_buying_sessions(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        admit_cap: Some(2),
        ..params()
    };
    let t = t0();
    s.set_status(&room, RoomStatus::Paused).await.unwrap();
    for (i, who) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            waiting(i as u64 + 1, true)
        );
    }
    s.set_status(&room, RoomStatus::Open).await.unwrap();
    let st = tick(s, &room, &p, t).await;
    assert_eq!(counts(&st), (2, 5, 3, 2, 2, 0, 0));
    let st = tick(s, &room, &p, t + 1_000).await;
    assert_eq!(counts(&st), (2, 5, 3, 2, 2, 0, 0), "cap full");
    // Only admitted identities can be marked; nothing changes otherwise.
    assert!(!s.mark_buying(&room, "c").await.unwrap(), "c waits");
    assert!(!s.mark_buying(&room, "nobody").await.unwrap());
    let st = tick(s, &room, &p, t + 2_000).await;
    assert_eq!(counts(&st), (2, 5, 3, 2, 2, 0, 0));
    // a reserved stock: it no longer counts, so one more gets in.
    assert!(s.mark_buying(&room, "a").await.unwrap());
    assert!(s.mark_buying(&room, "a").await.unwrap(), "repeat is fine");
    // The batched form counts only the admitted ones and changes nothing else.
    let batch = ["a", "c", "nobody"].map(String::from);
    assert_eq!(s.mark_buyers(&room, &batch).await.unwrap(), 1);
    assert_eq!(s.mark_buyers(&room, &[]).await.unwrap(), 0);
    let st = tick(s, &room, &p, t + 3_000).await;
    assert_eq!(counts(&st), (3, 5, 2, 3, 3, 0, 0));
    assert!(claim(s, &room, "c", &p, t + 3_000).await.is_some());
    // Empty queue, free slots, tokens, but the cap is full: a newcomer waits.
    assert_eq!(s.leave(&room, "d").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(s.leave(&room, "e").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(join(s, &room, "f", &p, t + 4_000).await, waiting(6, true));
    assert!(s.mark_buying(&room, "b").await.unwrap());
    let st = tick(s, &room, &p, t + 5_000).await;
    assert_eq!(counts(&st), (6, 6, 0, 4, 4, 0, 2));
    // A buying shopper that leaves takes its buying record along: the cap stays full.
    assert_eq!(
        s.leave(&room, "a").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    assert!(!s.mark_buying(&room, "a").await.unwrap());
    assert_eq!(join(s, &room, "g", &p, t + 6_000).await, waiting(7, true));
    let st = tick(s, &room, &p, t + 6_000).await;
    assert_eq!(counts(&st), (6, 7, 1, 3, 4, 0, 3));
    // A non-buying one leaving makes room.
    assert_eq!(
        s.leave(&room, "c").await.unwrap(),
        LeaveOutcome::EndedSession
    );
    let st = tick(s, &room, &p, t + 7_000).await;
    assert_eq!(counts(&st), (7, 7, 0, 3, 5, 0, 4));
}

async fn admit_cap_on_the_fast_path_and_zero_cap(s: &dyn Store) {
    let t = t0();
    // Cap 0: nobody is admitted, by join or by tick.
    let room = room_id();
    let zero = RoomParams {
        admit_cap: Some(0),
        ..params()
    };
    assert_eq!(join(s, &room, "a", &zero, t).await, waiting(1, true));
    assert_eq!(join(s, &room, "b", &zero, t).await, waiting(2, true));
    let st = tick(s, &room, &zero, t + 1_000).await;
    assert_eq!(counts(&st), (0, 2, 2, 0, 0, 0, 0));
    assert!(!s.mark_buying(&room, "a").await.unwrap());
    // Raising the cap (more stock) lets them in.
    let one = RoomParams {
        admit_cap: Some(1),
        ..params()
    };
    let st = tick(s, &room, &one, t + 2_000).await;
    assert_eq!(counts(&st), (1, 2, 1, 1, 1, 0, 0));

    // Cap 1 on the fast path: the first is admitted at once, the second waits until the first
    // is buying.
    let room = room_id();
    assert_eq!(join(s, &room, "a", &one, t).await, admitted(1, true));
    assert_eq!(join(s, &room, "b", &one, t).await, waiting(2, true));
    let st = tick(s, &room, &one, t + 1_000).await;
    assert_eq!(counts(&st), (1, 2, 1, 1, 1, 0, 0));
    assert!(s.mark_buying(&room, "a").await.unwrap());
    let st = tick(s, &room, &one, t + 2_000).await;
    assert_eq!(counts(&st), (2, 2, 0, 2, 2, 0, 0));
    // max_active still applies to buying sessions.
    let full = RoomParams {
        max_active: 2,
        admit_cap: Some(10),
        ..params()
    };
    assert!(s.mark_buying(&room, "b").await.unwrap());
    assert_eq!(
        join(s, &room, "c", &full, t + 3_000).await,
        waiting(3, true)
    );
    // No sale (cap None): buying records make no difference.
    let none = RoomParams {
        max_active: 3,
        ..params()
    };
    let st = tick(s, &room, &none, t + 4_000).await;
    assert_eq!(counts(&st), (3, 3, 0, 3, 3, 0, 0));
}

async fn buying_record_ends_with_the_session(s: &dyn Store) {
    let room = room_id();
    let p = RoomParams {
        admit_cap: Some(1),
        ..params()
    };
    let t = t0();
    assert_eq!(join(s, &room, "a", &p, t).await, admitted(1, true));
    assert_eq!(claim(s, &room, "a", &p, t).await, Some(t + SESSION));
    assert!(s.mark_buying(&room, "a").await.unwrap());
    assert_eq!(join(s, &room, "b", &p, t).await, admitted(2, true));
    assert_eq!(join(s, &room, "c", &p, t).await, waiting(3, true));
    // a's session expires: its slot and its buying record go; b (not buying) fills the cap.
    let end = t + SESSION;
    seen(s, &room, &p, end, &[3]).await;
    assert_eq!(claim(s, &room, "b", &p, t + 1).await, Some(t + 1 + SESSION));
    let st = tick(s, &room, &p, end).await;
    assert_eq!(counts(&st), (2, 3, 1, 1, 2, 0, 0));
    assert!(!s.mark_buying(&room, "a").await.unwrap());
    // b buys: c gets in.
    assert!(s.mark_buying(&room, "b").await.unwrap());
    let st = tick(s, &room, &p, end).await;
    assert_eq!(counts(&st), (3, 3, 0, 2, 3, 0, 0));
}

/// 1,500 anonymous (minted) joins and 250 named shoppers joining twice each, all at once: the
/// Redis store coalesces them into batches, the embedded one serialises them, and both must
/// give one place per identity, seqs 1..N once each, instant admission for exactly the first
/// `max_active` seqs, and the same answer to both joins of a named shopper.
async fn live_message_changes_with_its_version(s: &dyn Store) {
    let room = room_id();
    let p = params();
    let t = t0();
    // None yet: version 0, nothing to read.
    assert_eq!(tick(s, &room, &p, t).await.message_version, 0);
    assert_eq!(s.message(&room).await.unwrap(), (0, None));
    // Each set moves the version by one, and the tick reports it.
    assert_eq!(s.set_message(&room, r#"{"message":"a"}"#).await.unwrap(), 1);
    assert_eq!(tick(s, &room, &p, t + 1).await.message_version, 1);
    assert_eq!(
        s.message(&room).await.unwrap(),
        (1, Some(r#"{"message":"a"}"#.to_string()))
    );
    assert_eq!(s.set_message(&room, "").await.unwrap(), 2);
    assert_eq!(s.set_message(&room, "b").await.unwrap(), 3);
    assert_eq!(tick(s, &room, &p, t + 2).await.message_version, 3);
    assert_eq!(s.message(&room).await.unwrap(), (3, Some("b".to_string())));
    // Another room is untouched.
    let other = room_id();
    assert_eq!(s.message(&other).await.unwrap(), (0, None));
}

async fn concurrent_joins_form_one_line(s: Arc<dyn Store>) {
    const MINTED: u64 = 1_500;
    const NAMED: u64 = 250;
    const SLOTS: u32 = 10;
    let room = room_id();
    let p = RoomParams {
        max_active: SLOTS,
        burst: SLOTS,
        ..params()
    };
    let t = t0();
    let calls = (0..MINTED)
        .map(|i| (format!("m{i}"), true))
        .chain((0..2 * NAMED).map(|i| (format!("n{}", i % NAMED), false)));
    let tasks: Vec<_> = calls
        .map(|(who, minted)| {
            let (s, room) = (s.clone(), room.clone());
            tokio::spawn(async move {
                let out = s.join(&room, &who, minted, &p, t).await.unwrap();
                (who, out)
            })
        })
        .collect();
    let mut answers: HashMap<String, Vec<JoinOutcome>> = HashMap::new();
    for task in tasks {
        let (who, out) = task.await.unwrap();
        answers.entry(who).or_default().push(out);
    }
    assert_eq!(answers.len() as u64, MINTED + NAMED);

    let mut seqs = HashSet::new();
    let mut admitted_seqs = HashSet::new();
    for (who, outs) in &answers {
        let made: Vec<_> = outs
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    JoinOutcome::Waiting { created: true, .. }
                        | JoinOutcome::Admitted { created: true, .. }
                )
            })
            .collect();
        assert_eq!(
            made.len(),
            1,
            "{who}: exactly one join makes the place: {outs:?}"
        );
        let seq = match made[0] {
            JoinOutcome::Waiting { seq, .. } => *seq,
            JoinOutcome::Admitted { seq, .. } => {
                admitted_seqs.insert(*seq);
                *seq
            }
            other => panic!("{who}: {other:?}"),
        };
        assert!(seqs.insert(seq), "{who}: seq {seq} given twice");
        for again in outs.iter().filter(|o| !std::ptr::eq(*o, made[0])) {
            match (made[0], again) {
                (
                    JoinOutcome::Waiting { .. },
                    JoinOutcome::Waiting {
                        seq: s2,
                        created: false,
                    },
                ) => {
                    assert_eq!(*s2, seq, "{who}: the repeat finds the same place")
                }
                (JoinOutcome::Admitted { .. }, JoinOutcome::Admitted { created: false, .. }) => {}
                other => panic!("{who}: repeat answered {other:?}"),
            }
        }
    }
    let n = MINTED + NAMED;
    assert_eq!(
        seqs,
        (1..=n).collect::<HashSet<_>>(),
        "seqs are 1..N, once each"
    );
    assert_eq!(
        admitted_seqs,
        (1..=u64::from(SLOTS)).collect::<HashSet<_>>(),
        "instant admission takes exactly the first seqs, while nobody waits"
    );
    let held = RoomParams { hold: true, ..p };
    let st = tick(&*s, &room, &held, t).await;
    assert_eq!(st.last_seq, n);
    assert_eq!(st.waiting, n - u64::from(SLOTS));
    assert_eq!(st.active, u64::from(SLOTS));
}
