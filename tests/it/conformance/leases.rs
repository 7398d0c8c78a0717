//! The `Store` trait (leases, `on_store_error = "capped"`): a node's lease holds session slots
//! back from every other admission; holders keep theirs and share the unheld ones, never more
//! than a quarter of the room together; an expired lease frees them;
//! reconcile records the outage's admissions as sessions (out of the queue, against the token
//! bucket) and gives the lease back. Time is driven explicitly, on both stores.

use rushgate::store::{JoinOutcome, Lease, RoomParams, Store};

use super::{room_id, t0};
use crate::both_stores;

fn params() -> RoomParams {
    RoomParams {
        admit_per_minute: 600,
        max_active: 10,
        burst: 10,
        idle_ms: 60_000,
        interval_ms: 6_000,
        session_ms: 600_000,
        admit_cap: None,
        prequeue_until_ms: None,
        instant: true,
        hold: false,
    }
}

both_stores!(rooms:
    leased_slots_are_held_back_from_admission,
    reconcile_records_outage_sessions_and_returns_the_lease,
);

async fn leased_slots_are_held_back_from_admission(s: &dyn Store) {
    let (room, t) = (room_id(), t0());
    let p = RoomParams {
        admit_per_minute: 60_000,
        max_active: 40,
        burst: 1_000,
        ..params()
    };
    // Two sessions; 38 free. Node a alone: half the unheld slots (19), at most a quarter of
    // max_active per holder (10).
    for who in ["s1", "s2"] {
        s.join(&room, who, false, &p, t).await.unwrap();
    }
    let a = s.lease(&room, "a", 100, &p, 30_000, t).await.unwrap();
    assert_eq!(
        a,
        Lease {
            slots: 10,
            holders: 1,
            leased: 10
        }
    );
    // Node b: a third of the 28 unheld (9), at most 40 / (4 * 2) = 5.
    let b = s.lease(&room, "b", 100, &p, 30_000, t).await.unwrap();
    assert_eq!(
        b,
        Lease {
            slots: 5,
            holders: 2,
            leased: 15
        }
    );
    // A node asks for less than it holds: it gets what it asks; renewing replaces.
    let a = s.lease(&room, "a", 2, &p, 30_000, t + 1).await.unwrap();
    assert_eq!((a.slots, a.leased), (2, 7));
    // 40 - 2 sessions - 7 leased = 31 slots for joins, then they queue.
    let mut admitted = 0;
    for i in 0..35 {
        let who = format!("j{i}");
        if let JoinOutcome::Admitted { .. } = s.join(&room, &who, false, &p, t + 2).await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 31);
    let state = s.tick(&room, &p, t + 3, None).await.unwrap();
    assert_eq!((state.active, state.waiting), (33, 4));
    // A full room: a node keeps what it holds but gets nothing more.
    let a = s.lease(&room, "a", 100, &p, 30_000, t + 4).await.unwrap();
    assert_eq!((a.slots, a.leased), (2, 7));
    // Leases expire: the slots are free again for the pacer.
    let state = s.tick(&room, &p, t + 40_000, None).await.unwrap();
    assert_eq!((state.active, state.waiting), (37, 0));
    for who in ["x1", "x2", "x3"] {
        s.join(&room, who, false, &p, t + 40_001).await.unwrap();
    }
    // With the room full a lease gets nothing.
    let none = s
        .lease(&room, "a", 5, &p, 30_000, t + 40_002)
        .await
        .unwrap();
    assert_eq!((none.slots, none.holders, none.leased), (0, 0, 0));
}

async fn reconcile_records_outage_sessions_and_returns_the_lease(s: &dyn Store) {
    let (room, mut p, t) = (room_id(), params(), t0());
    p.instant = false;
    // Five waiters (instant admission off: every arrival queues).
    for i in 1..=5 {
        s.join(&room, &format!("w{i}"), false, &p, t).await.unwrap();
    }
    // At most max_active / 4 for one holder.
    let lease = s.lease(&room, "a", 3, &p, 30_000, t).await.unwrap();
    assert_eq!(lease.slots, 2);
    // During the outage node a admitted w1 and w2 (and w2 twice: polls on the node again),
    // plus a new arrival "n" that never queued.
    let until = t + 600_000;
    let outage = vec![
        ("w1".to_string(), until),
        ("w2".to_string(), until),
        ("w2".to_string(), until),
        ("n".to_string(), until),
    ];
    assert_eq!(
        s.reconcile(&room, "a", &outage, &p, t + 10_000)
            .await
            .unwrap(),
        3
    );
    // Again (a retry of a reconcile whose answer was lost): nothing new.
    assert_eq!(
        s.reconcile(&room, "a", &outage, &p, t + 10_001)
            .await
            .unwrap(),
        0
    );
    // They are sessions now, out of the queue, and count: the lease is gone, and the bucket
    // (10 tokens, less 3) admits 7 more at most.
    let state = s.tick(&room, &p, t + 10_002, None).await.unwrap();
    assert_eq!(state.active, 3 + 3, "{state:?}");
    assert_eq!(state.waiting, 0, "{state:?}");
    assert_eq!(state.admitted_total, 6);
    let again = s
        .lease(&room, "b", 100, &p, 30_000, t + 10_003)
        .await
        .unwrap();
    assert_eq!(again.holders, 1, "a's lease was given back");
}
