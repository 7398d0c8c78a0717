//! The `Store` trait (groups): a shopper's session holds across the rooms of a group, and
//! keeping an admission's claim window open while it is held, on both stores.

use rushgate::store::{GroupHold, JoinOutcome, RoomParams, Store, GROUP_HOLD_MARGIN_MS};

use super::{room_id, t0};
use crate::both_stores;

const SESSION: u64 = 600_000;
const IDLE: u64 = 60_000;

fn params() -> RoomParams {
    RoomParams {
        admit_per_minute: 60_000,
        max_active: 10,
        burst: 1_000,
        idle_ms: IDLE,
        interval_ms: 6_000,
        session_ms: SESSION,
        admit_cap: None,
        prequeue_until_ms: None,
        instant: true,
        hold: false,
    }
}

both_stores!(rooms:
    a_shopper_holds_at_most_the_groups_sessions,
    a_held_admission_keeps_its_claim_window,
);

async fn a_shopper_holds_at_most_the_groups_sessions(s: &dyn Store) {
    let group = format!("g{}", room_id().as_str());
    let (a, b, c) = (room_id(), room_id(), room_id());
    let t = t0();
    let hold = |room, until, most, now| {
        let group = group.clone();
        async move {
            s.group_hold(&group, "alice", room, until, most, now)
                .await
                .unwrap()
        }
    };
    // One session at a time: the first room's hold is granted, the others are held by it.
    assert_eq!(hold(&a, t + SESSION, 1, t).await, GroupHold::Granted);
    assert_eq!(
        hold(&b, t + SESSION, 1, t).await,
        GroupHold::Held(vec![a.as_str().to_string()])
    );
    assert_eq!(
        hold(&c, t + SESSION, 1, t + 1).await,
        GroupHold::Held(vec![a.as_str().to_string()])
    );
    // The same room's running session keeps its own hold (a shorter ask does not cut it).
    assert_eq!(hold(&a, t + 10, 1, t + 2).await, GroupHold::Granted);
    assert_eq!(
        hold(&b, t + SESSION, 1, t + SESSION - 1).await,
        GroupHold::Held(vec![a.as_str().to_string()])
    );
    // Other shoppers are not affected.
    assert_eq!(
        s.group_hold(&group, "bob", &b, t + SESSION, 1, t)
            .await
            .unwrap(),
        GroupHold::Granted
    );
    // Released: the next room's hold is granted; releasing again drops nothing.
    assert!(s.group_release(&group, "alice", &a, t + 3).await.unwrap());
    assert!(!s.group_release(&group, "alice", &a, t + 3).await.unwrap());
    assert_eq!(
        hold(&b, t + 3 + SESSION, 1, t + 3).await,
        GroupHold::Granted
    );
    // A hold past its end counts no more.
    assert_eq!(
        hold(&c, t + 2 * SESSION, 1, t + 3 + SESSION).await,
        GroupHold::Granted
    );
    // Two at a time: a third room waits for one of them.
    assert_eq!(
        hold(&a, t + 3 * SESSION, 2, t + 4 + SESSION).await,
        GroupHold::Granted
    );
    match hold(&b, t + 3 * SESSION, 2, t + 5 + SESSION).await {
        GroupHold::Held(mut rooms) => {
            rooms.sort();
            let mut want = vec![a.as_str().to_string(), c.as_str().to_string()];
            want.sort();
            assert_eq!(rooms, want);
        }
        other => panic!("{other:?}"),
    }
    // Another group is separate.
    assert_eq!(
        s.group_hold("other-group", "alice", &b, t + SESSION, 1, t + 6 + SESSION)
            .await
            .unwrap(),
        GroupHold::Granted
    );

    // A pass picked up again later in its session keeps the hold's end: the other rooms are
    // held no longer than the session (plus the margin), not a session past the re-pickup.
    let ask = |who, room, until, now| {
        let group = group.clone();
        async move {
            s.group_hold(&group, who, room, until, 1, now)
                .await
                .unwrap()
        }
    };
    let carol = |room, until, now| ask("carol", room, until, now);
    let dave = |room, until, now| ask("dave", room, until, now);
    let u = t + 7 * SESSION;
    let end = u + SESSION + GROUP_HOLD_MARGIN_MS;
    assert_eq!(carol(&a, end, u).await, GroupHold::Granted);
    let later = u + SESSION / 2;
    assert_eq!(
        carol(&a, later + SESSION + GROUP_HOLD_MARGIN_MS, later).await,
        GroupHold::Granted
    );
    assert_eq!(
        carol(&b, end - 1 + SESSION, end - 1).await,
        GroupHold::Held(vec![a.as_str().to_string()])
    );
    assert_eq!(carol(&b, end + SESSION, end).await, GroupHold::Granted);
    // The session over (its hold within the margin), a new session in the same room replaces
    // the hold: it holds the other rooms for its own full length.
    assert_eq!(dave(&a, end, u).await, GroupHold::Granted);
    let again = end - GROUP_HOLD_MARGIN_MS / 2;
    let new_end = again + SESSION + GROUP_HOLD_MARGIN_MS;
    assert_eq!(dave(&a, new_end, again).await, GroupHold::Granted);
    assert_eq!(
        dave(&b, new_end - 1 + SESSION, new_end - 1).await,
        GroupHold::Held(vec![a.as_str().to_string()])
    );
    assert_eq!(
        dave(&b, new_end + SESSION, new_end).await,
        GroupHold::Granted
    );
}

async fn a_held_admission_keeps_its_claim_window(s: &dyn Store) {
    let room = room_id();
    let p = params();
    let t = t0();
    let joined = s.join(&room, "alice", false, &p, t).await.unwrap();
    assert!(matches!(joined, JoinOutcome::Admitted { .. }), "{joined:?}");
    // Kept open past the original window, as often as asked.
    assert!(s
        .keep_claim(&room, "alice", t + 2 * IDLE, t + 1_000)
        .await
        .unwrap());
    assert!(s
        .keep_claim(&room, "alice", t + 3 * IDLE, t + 2 * IDLE - 1)
        .await
        .unwrap());
    // Still claimable late: the admission was not lost.
    assert_eq!(
        s.claim(&room, "alice", &p, t + 3 * IDLE - 1).await.unwrap(),
        Some(t + 3 * IDLE - 1 + SESSION)
    );
    // A claimed session has its own expiry: not a claim window to keep.
    assert!(!s
        .keep_claim(&room, "alice", t + 4 * IDLE, t + 3 * IDLE)
        .await
        .unwrap());
    // Nobody admitted: nothing to keep.
    assert!(!s.keep_claim(&room, "bob", t + IDLE, t).await.unwrap());
}
