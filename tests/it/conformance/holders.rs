//! The `Store` trait (holders): holder generations, transfer codes, ends as holder and as
//! operator, and the revocation feed, with time driven explicitly, on both stores.

use rushgate::store::{
    Claimed, EndedBy, JoinOutcome, LeaveOutcome, Revocation, RevokeReason, RoomParams, Store,
    TransferClaim, TransferOffer,
};

use super::{room_id, t0};
use crate::both_stores;

const DAY: u64 = 24 * 3600 * 1000;

fn params() -> RoomParams {
    RoomParams {
        admit_per_minute: 60_000,
        max_active: 2,
        burst: 1_000,
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
    transfer_moves_a_waiting_place_once,
    transfer_of_an_admitted_session_and_stale_codes,
    ends_raise_the_generation_and_feed_nodes,
    revocation_feed_is_trimmed_when_entries_expire,
);

async fn transfer_moves_a_waiting_place_once(s: &dyn Store) {
    let (room, p, t) = (room_id(), params(), t0());
    // Two admitted fill the room; "w" waits with seq 3.
    for who in ["a", "b"] {
        s.join(&room, who, false, &p, t).await.unwrap();
    }
    let joined = s.join_as(&room, "w", false, &p, t).await.unwrap();
    assert_eq!(
        joined.outcome,
        JoinOutcome::Waiting {
            seq: 3,
            created: true
        }
    );
    assert_eq!(joined.gen, 0);

    assert_eq!(
        s.offer_transfer(&room, "w", 0, "shop-user", "CODE234567", 120_000, t)
            .await
            .unwrap(),
        TransferOffer::Offered
    );
    assert_eq!(
        s.offer_transfer(&room, "w", 0, "", "CODE234567", 120_000, t)
            .await
            .unwrap(),
        TransferOffer::Taken
    );
    assert_eq!(
        s.offer_transfer(&room, "nobody", 0, "", "CODE765432", 120_000, t)
            .await
            .unwrap(),
        TransferOffer::Absent
    );
    let moved = match s
        .claim_transfer(&room, "CODE234567", "claim1", t + 1, t + DAY)
        .await
        .unwrap()
    {
        TransferClaim::Moved(m) => m,
        other => panic!("expected a move, got {other:?}"),
    };
    assert_eq!((moved.identity.as_str(), moved.gen, moved.seq), ("w", 1, 3));
    assert!(!moved.admitted);
    assert_eq!(moved.uid, "shop-user");
    // Once, whoever asks next.
    assert_eq!(
        s.claim_transfer(&room, "CODE234567", "claim2", t + 2, t + DAY)
            .await
            .unwrap(),
        TransferClaim::Unknown
    );
    // The claim that moved it, repeated (its answer was lost): the same move, nothing new.
    assert_eq!(
        s.claim_transfer(&room, "CODE234567", "claim1", t + 3, t + DAY)
            .await
            .unwrap(),
        TransferClaim::Moved(moved.clone())
    );
    assert_eq!(s.revocations(&room, 0).await.unwrap().1, 1);
    // ...for five minutes.
    assert_eq!(
        s.claim_transfer(&room, "CODE234567", "claim1", t + 300_001, t + DAY)
            .await
            .unwrap(),
        TransferClaim::Unknown
    );
    // The old holder can no longer offer, leave or claim; the new one can.
    assert_eq!(
        s.offer_transfer(&room, "w", 0, "", "CODE999999", 120_000, t)
            .await
            .unwrap(),
        TransferOffer::Moved
    );
    assert_eq!(
        s.end(&room, "w", EndedBy::Holder(0), t + DAY)
            .await
            .unwrap(),
        LeaveOutcome::Moved
    );
    assert_eq!(
        s.claim_as(&room, "w", Some(0), &p, t).await.unwrap(),
        Claimed::Moved
    );
    // A later join of the same identity learns the generation in force.
    let again = s.join_as(&room, "w", false, &p, t + 3).await.unwrap();
    assert_eq!(
        again.outcome,
        JoinOutcome::Waiting {
            seq: 3,
            created: false
        }
    );
    assert_eq!(again.gen, 1);
    // The feed says so.
    let st = s.tick(&room, &p, t + 4, None).await.unwrap();
    assert_eq!(st.revoked_total, 1);
    let (entries, next) = s.revocations(&room, 0).await.unwrap();
    assert_eq!(next, 1);
    assert_eq!(
        entries,
        vec![Revocation {
            identity: "w".into(),
            gen: 1,
            reason: RevokeReason::Transferred,
            until_ms: t + DAY,
        }]
    );
    assert_eq!(s.revocations(&room, 1).await.unwrap(), (vec![], 1));
    // The new holder leaves the line (a waiting place: no revocation needed).
    assert_eq!(
        s.end(&room, "w", EndedBy::Holder(1), t + DAY)
            .await
            .unwrap(),
        LeaveOutcome::LeftQueue
    );
    assert_eq!(
        s.tick(&room, &p, t + 5, None).await.unwrap().revoked_total,
        1
    );
}

async fn transfer_of_an_admitted_session_and_stale_codes(s: &dyn Store) {
    let (room, p, t) = (room_id(), params(), t0());
    assert_eq!(
        s.join(&room, "a", false, &p, t).await.unwrap(),
        JoinOutcome::Admitted {
            seq: 1,
            created: true
        }
    );
    let expiry = s.claim_as(&room, "a", Some(0), &p, t).await.unwrap();
    assert_eq!(expiry, Claimed::Session(t + 600_000));
    s.offer_transfer(&room, "a", 0, "", "AAAA222222", 120_000, t)
        .await
        .unwrap();
    s.offer_transfer(&room, "a", 0, "", "BBBB222222", 120_000, t)
        .await
        .unwrap();
    let moved = match s
        .claim_transfer(&room, "AAAA222222", "c1", t + 1, t + DAY)
        .await
        .unwrap()
    {
        TransferClaim::Moved(m) => m,
        other => panic!("expected a move, got {other:?}"),
    };
    assert!(moved.admitted);
    assert_eq!((moved.gen, moved.seq), (1, 0));
    // The session (and its expiry) moved with it.
    assert_eq!(
        s.claim_as(&room, "a", Some(1), &p, t + 2).await.unwrap(),
        expiry
    );
    assert_eq!(
        s.claim_as(&room, "a", Some(0), &p, t + 2).await.unwrap(),
        Claimed::Moved
    );
    // The second code was made before the move: spent, and moves nothing.
    assert_eq!(
        s.claim_transfer(&room, "BBBB222222", "c2", t + 3, t + DAY)
            .await
            .unwrap(),
        TransferClaim::Stale
    );
    // A code expires on its own.
    s.offer_transfer(&room, "a", 1, "", "CCCC222222", 1_000, t + 3)
        .await
        .unwrap();
    assert_eq!(
        s.claim_transfer(&room, "CCCC222222", "c3", t + 2_000, t + DAY)
            .await
            .unwrap(),
        TransferClaim::Unknown,
        "an expired code"
    );
}

async fn ends_raise_the_generation_and_feed_nodes(s: &dyn Store) {
    let (room, p, t) = (room_id(), params(), t0());
    s.join(&room, "a", false, &p, t).await.unwrap();
    s.claim_as(&room, "a", Some(0), &p, t).await.unwrap();
    // The holder ends its session: slot freed, generation raised, feed entry.
    assert_eq!(
        s.end(&room, "a", EndedBy::Holder(0), t + DAY)
            .await
            .unwrap(),
        LeaveOutcome::EndedSession
    );
    let st = s.tick(&room, &p, t + 1, None).await.unwrap();
    assert_eq!((st.active, st.revoked_total), (0, 1));
    // The operator ends an identity that holds nothing: still revoked (its passes may have
    // been made without the store).
    assert_eq!(
        s.end(&room, "x", EndedBy::Operator, t + DAY).await.unwrap(),
        LeaveOutcome::Absent
    );
    // The operator ends a rejoined session regardless of the generation asked with.
    let again = s.join_as(&room, "a", false, &p, t + 2).await.unwrap();
    assert_eq!(again.gen, 1);
    assert_eq!(
        s.end(&room, "a", EndedBy::Operator, t + DAY).await.unwrap(),
        LeaveOutcome::EndedSession
    );
    let (entries, next) = s.revocations(&room, 0).await.unwrap();
    assert_eq!(next, 3);
    let seen: Vec<(&str, u32, RevokeReason)> = entries
        .iter()
        .map(|e| (e.identity.as_str(), e.gen, e.reason))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", 1, RevokeReason::Ended),
            ("x", 1, RevokeReason::Ended),
            ("a", 2, RevokeReason::Ended)
        ]
    );
    assert_eq!(s.revocations(&room, 2).await.unwrap().0.len(), 1);
}

async fn revocation_feed_is_trimmed_when_entries_expire(s: &dyn Store) {
    let (room, p, t) = (room_id(), params(), t0());
    for (i, who) in ["a", "b", "c"].iter().enumerate() {
        s.end(&room, who, EndedBy::Operator, t + 1_000 * (i as u64 + 1))
            .await
            .unwrap();
    }
    // The tick at t + 2000 trims the two entries kept until t + 1000 and t + 2000.
    let st = s.tick(&room, &p, t + 2_000, None).await.unwrap();
    assert_eq!(st.revoked_total, 3);
    let (entries, next) = s.revocations(&room, 0).await.unwrap();
    assert_eq!(next, 3, "a reader from the start skips what was trimmed");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].identity, "c");
}
