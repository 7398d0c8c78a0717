//! The `Store` trait (scheduled drops): the pre-queue, the seed commitment, freezing, the
//! batched and idempotent seq assignment at opening, lookups of pre-queue tickets, and the room
//! modes' store flags (`instant`, `hold`), with time driven explicitly.

use rushgate::id::RoomId;
use rushgate::store::{
    JoinOutcome, LeaveOutcome, Lookup, PrequeueState, RoomParams, RoomState, Store,
};

use super::{room_id, t0};
use crate::both_stores;

const OPENS_IN: u64 = 10_000;

/// Fast pacing, many slots, 60 s idle timeout in 6 s intervals; a pre-queue until `opens`.
fn params(opens: Option<u64>) -> RoomParams {
    RoomParams {
        admit_per_minute: 60_000,
        max_active: 1_000,
        burst: 1_000,
        idle_ms: 60_000,
        interval_ms: 6_000,
        session_ms: 600_000,
        admit_cap: None,
        prequeue_until_ms: opens,
        instant: true,
        hold: false,
    }
}

async fn join(s: &dyn Store, room: &RoomId, who: &str, p: &RoomParams, now: u64) -> JoinOutcome {
    s.join(room, who, false, p, now).await.unwrap()
}

async fn tick(s: &dyn Store, room: &RoomId, p: &RoomParams, now: u64) -> RoomState {
    s.tick(room, p, now, None).await.unwrap()
}

async fn lookup(s: &dyn Store, room: &RoomId, who: &str, p: &RoomParams, now: u64) -> Lookup {
    s.lookup(room, who, p, now).await.unwrap()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn pre(waiting: u64, frozen: bool, base: u64, count: u64, assigned: u64) -> PrequeueState {
    PrequeueState {
        waiting,
        frozen,
        base,
        count,
        assigned,
    }
}

both_stores!(rooms:
    prequeue_opens_in_the_given_order_ahead_of_later_arrivals,
    seed_commit_first_wins,
    assignment_rejects_wrong_batches,
    leaving_the_prequeue_before_and_during_the_opening,
    queue_mode_and_hold,
    prequeue_behind_earlier_seqs,
);

async fn prequeue_opens_in_the_given_order_ahead_of_later_arrivals(s: &dyn Store) {
    let room = room_id();
    let t = t0();
    let p = params(Some(t + OPENS_IN));
    for who in ["a", "b", "c", "d"] {
        assert_eq!(
            join(s, &room, who, &p, t).await,
            JoinOutcome::Prequeue { created: true }
        );
    }
    assert_eq!(
        join(s, &room, "a", &p, t + 1).await,
        JoinOutcome::Prequeue { created: false }
    );
    assert_eq!(lookup(s, &room, "b", &p, t + 2).await, Lookup::Prequeue);
    assert_eq!(lookup(s, &room, "zz", &p, t + 2).await, Lookup::Absent);
    // No seq is used before the opening and nobody is admitted.
    let st = tick(s, &room, &p, t + 3).await;
    assert_eq!((st.last_seq, st.waiting, st.active), (0, 0, 0));
    assert_eq!(st.prequeue, pre(4, false, 0, 0, 0));

    // The first join at the opening freezes the pre-queue and queues behind its four members,
    // with no instant admission while they have no seq.
    assert_eq!(
        join(s, &room, "late", &p, t + OPENS_IN).await,
        JoinOutcome::Waiting {
            seq: 5,
            created: true
        }
    );
    let st = tick(s, &room, &p, t + OPENS_IN + 1).await;
    assert_eq!(
        (st.last_seq, st.waiting, st.active, st.served),
        (5, 1, 0, 0)
    );
    assert_eq!(st.prequeue, pre(4, true, 0, 4, 0));
    assert_eq!(
        s.freeze_prequeue(&room).await.unwrap(),
        pre(4, true, 0, 4, 0)
    );
    assert_eq!(
        lookup(s, &room, "a", &p, t + OPENS_IN + 1).await,
        Lookup::Prequeue
    );
    let mut members = s.prequeue_members(&room).await.unwrap();
    members.sort();
    assert_eq!(members, ids(&["a", "b", "c", "d"]));

    // Two batches in the order the caller drew; a racing node's repeats change nothing.
    let now = t + OPENS_IN + 2;
    let order = ids(&["c", "a", "d", "b"]);
    assert_eq!(
        s.assign_prequeue(&room, &p, 0, &order[..2], now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.assign_prequeue(&room, &p, 0, &order[..2], now)
            .await
            .unwrap(),
        2
    );
    // Mid-opening: still nobody admitted.
    let st = tick(s, &room, &p, now).await;
    assert_eq!((st.waiting, st.active, st.served), (3, 0, 0));
    assert_eq!(st.prequeue, pre(2, true, 0, 4, 2));
    assert_eq!(
        s.assign_prequeue(&room, &p, 2, &order[2..], now)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        s.assign_prequeue(&room, &p, 2, &order[2..], now)
            .await
            .unwrap(),
        4
    );
    for (who, seq) in [("c", 1), ("a", 2), ("d", 3), ("b", 4), ("late", 5)] {
        assert_eq!(
            lookup(s, &room, who, &p, now).await,
            Lookup::Waiting { seq },
            "{who}"
        );
    }
    assert_eq!(
        join(s, &room, "a", &p, now).await,
        JoinOutcome::Waiting {
            seq: 2,
            created: false
        }
    );

    // Admission follows the drawn order: two slots take c and a.
    let two = RoomParams { max_active: 2, ..p };
    let st = tick(s, &room, &two, now + 1).await;
    assert_eq!((st.served, st.waiting, st.active), (2, 3, 2));
    assert!(st.prequeue.opened());
    assert_eq!(st.prequeue, pre(0, true, 0, 4, 4));
    assert_eq!(lookup(s, &room, "c", &p, now + 1).await, Lookup::Admitted);
    assert_eq!(lookup(s, &room, "a", &p, now + 1).await, Lookup::Admitted);
    assert_eq!(
        lookup(s, &room, "d", &p, now + 1).await,
        Lookup::Waiting { seq: 3 }
    );
    // After the opening, newcomers are plain FIFO arrivals (the record does not hold them).
    assert_eq!(
        join(s, &room, "e", &p, now + 2).await,
        JoinOutcome::Waiting {
            seq: 6,
            created: true
        }
    );
    let st = tick(s, &room, &p, now + 3).await;
    assert_eq!((st.served, st.waiting, st.active), (6, 0, 6));
}

async fn seed_commit_first_wins(s: &dyn Store) {
    let room = room_id();
    let first = "aa".repeat(32);
    assert_eq!(s.commit_seed(&room, &first).await.unwrap(), first);
    assert_eq!(s.commit_seed(&room, &"bb".repeat(32)).await.unwrap(), first);
    let st = tick(s, &room, &params(None), t0()).await;
    assert_eq!(st.seed.as_deref(), Some(first.as_str()));
    let other = room_id();
    assert_eq!(tick(s, &other, &params(None), t0()).await.seed, None);
}

async fn assignment_rejects_wrong_batches(s: &dyn Store) {
    let room = room_id();
    let t = t0();
    let p = params(Some(t + OPENS_IN));
    for who in ["a", "b"] {
        join(s, &room, who, &p, t).await;
    }
    // Not frozen yet.
    assert!(s
        .assign_prequeue(&room, &p, 0, &ids(&["a"]), t)
        .await
        .is_err());
    assert_eq!(
        s.freeze_prequeue(&room).await.unwrap(),
        pre(2, true, 0, 2, 0)
    );
    // A stranger, or a batch past the end: refused, nothing changes.
    assert!(s
        .assign_prequeue(&room, &p, 0, &ids(&["a", "x"]), t)
        .await
        .is_err());
    assert!(s
        .assign_prequeue(&room, &p, 0, &ids(&["a", "b", "a"]), t)
        .await
        .is_err());
    assert_eq!(
        s.freeze_prequeue(&room).await.unwrap(),
        pre(2, true, 0, 2, 0)
    );
    assert_eq!(lookup(s, &room, "a", &p, t).await, Lookup::Prequeue);
    // A frozen pre-queue takes no arrivals, even from a node whose clock is behind.
    assert_eq!(
        join(s, &room, "c", &p, t + 1).await,
        JoinOutcome::Waiting {
            seq: 3,
            created: true
        }
    );
    // A batch from the wrong start is ignored and says where the assignment stands.
    assert_eq!(
        s.assign_prequeue(&room, &p, 1, &ids(&["b"]), t)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.assign_prequeue(&room, &p, 0, &ids(&["b", "a"]), t)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        lookup(s, &room, "b", &p, t).await,
        Lookup::Waiting { seq: 1 }
    );
}

async fn leaving_the_prequeue_before_and_during_the_opening(s: &dyn Store) {
    let room = room_id();
    let t = t0();
    let p = params(Some(t + OPENS_IN));
    for who in ["a", "b", "c"] {
        join(s, &room, who, &p, t).await;
    }
    // Before the freeze, leaving takes the member out of the pre-queue.
    assert_eq!(s.leave(&room, "b").await.unwrap(), LeaveOutcome::LeftQueue);
    assert_eq!(s.leave(&room, "b").await.unwrap(), LeaveOutcome::Absent);
    let st = tick(s, &room, &p, t + 1).await;
    assert_eq!((st.prequeue.waiting, st.left_total), (2, 1));
    // Frozen: the member is recorded and gets its gone bit when the opening reaches it.
    assert_eq!(
        s.freeze_prequeue(&room).await.unwrap(),
        pre(2, true, 0, 2, 0)
    );
    assert_eq!(s.leave(&room, "c").await.unwrap(), LeaveOutcome::LeftQueue);
    let now = t + OPENS_IN;
    assert_eq!(
        s.assign_prequeue(&room, &p, 0, &ids(&["c", "a"]), now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(lookup(s, &room, "c", &p, now).await, Lookup::Absent);
    assert_eq!(
        lookup(s, &room, "a", &p, now).await,
        Lookup::Waiting { seq: 2 }
    );
    let one = RoomParams { max_active: 1, ..p };
    let st = tick(s, &room, &one, now).await;
    assert_eq!((st.served, st.active, st.left_total), (2, 1, 2));
    assert_eq!(
        st.gone.map(|g| g.bytes.to_vec()),
        Some(Vec::new()),
        "the watermark passed the gone seq"
    );
    assert_eq!(lookup(s, &room, "a", &p, now).await, Lookup::Admitted);
}

async fn queue_mode_and_hold(s: &dyn Store) {
    let room = room_id();
    let t = t0();
    // Mode queue: no instant admission, even into an empty room; the pacer admits.
    let queue = RoomParams {
        instant: false,
        ..params(None)
    };
    assert_eq!(
        join(s, &room, "a", &queue, t).await,
        JoinOutcome::Waiting {
            seq: 1,
            created: true
        }
    );
    // Hold (mode closed): ticks pop nobody.
    let hold = RoomParams {
        hold: true,
        ..queue
    };
    let st = tick(s, &room, &hold, t + 1).await;
    assert_eq!((st.served, st.waiting, st.active), (0, 1, 0));
    let st = tick(s, &room, &queue, t + 2).await;
    assert_eq!((st.served, st.waiting, st.active), (1, 0, 1));
    // Safety net: the next arrival into a room with room is admitted at once.
    assert_eq!(
        join(s, &room, "b", &params(None), t + 3).await,
        JoinOutcome::Admitted {
            seq: 2,
            created: true
        }
    );
}

async fn prequeue_behind_earlier_seqs(s: &dyn Store) {
    // Seqs handed out before the pre-queue (a room reused for a second drop) stay ahead: the
    // reserved block starts after them.
    let room = room_id();
    let t = t0();
    let plain = RoomParams {
        instant: false,
        ..params(None)
    };
    join(s, &room, "early", &plain, t).await;
    let p = params(Some(t + OPENS_IN));
    join(s, &room, "x", &p, t + 1).await;
    join(s, &room, "y", &p, t + 1).await;
    assert_eq!(
        s.freeze_prequeue(&room).await.unwrap(),
        pre(2, true, 1, 2, 0)
    );
    assert_eq!(
        s.assign_prequeue(&room, &p, 0, &ids(&["y", "x"]), t + OPENS_IN)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        lookup(s, &room, "y", &p, t + OPENS_IN).await,
        Lookup::Waiting { seq: 2 }
    );
    assert_eq!(
        lookup(s, &room, "x", &p, t + OPENS_IN).await,
        Lookup::Waiting { seq: 3 }
    );
    assert_eq!(
        lookup(s, &room, "early", &p, t + OPENS_IN).await,
        Lookup::Waiting { seq: 1 }
    );
}
