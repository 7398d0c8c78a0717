//! Join, poll, leave and the JSON contract, on both stores.

use std::time::Duration;

use reqwest::StatusCode;

use crate::both_stores;
use crate::harness::*;

both_stores!(join_poll_admit_and_pass);
async fn join_poll_admit_and_pass(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let app = spawn_app(config(url, vec![r])).await;

    // Nobody waits: the first shopper is admitted at once.
    let first = app.join(&id, None, None).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.str("state"), "admitted");
    assert!(!first.str("pass").is_empty());
    let cookies = first.set_cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("rg_ticket_{id}="))
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax")
                && !c.contains("Secure")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("rg_pass_{id}="))),
        "{cookies:?}"
    );

    // The room is full: the next two wait, in order.
    let second = app.join(&id, Some("bob"), None).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.str("state"), "waiting");
    assert_eq!(second.u64("position"), 1);
    assert_eq!(second.u64("ahead"), 0);
    assert!(
        second.body["eta_seconds"]["p50"].is_u64() || second.body["eta_seconds"]["p50"].is_null()
    );
    assert!(second.u64("poll_after_ms") > 0);
    let third = app.join(&id, None, None).await;
    assert_eq!(third.u64("position"), 2);

    // Same user key, same place; same ticket, same place.
    let again = app.join(&id, Some("bob"), None).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.u64("position"), 1);
    let t3 = third.str("ticket").to_string();
    let again3 = app.join(&id, None, Some(&t3)).await;
    assert_eq!(again3.status, StatusCode::OK);
    assert_eq!(again3.str("ticket"), t3);

    let polled = app.position(&id, second.str("ticket")).await;
    assert_eq!(polled.status, StatusCode::OK);
    assert_eq!(polled.str("state"), "waiting");
    assert_eq!(polled.u64("position"), 1);

    // The first shopper leaves: the slot frees and bob is admitted with a pass.
    let left = app.leave(&id, first.str("ticket")).await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.body);
    let t2 = second.str("ticket").to_string();
    wait_until(
        std::time::Duration::from_secs(10),
        "bob is admitted",
        || {
            let (app, id, t2) = (&app, &id, &t2);
            async move { app.position(id, t2).await.str("state") == "admitted" }
        },
    )
    .await;
    let admitted = app.position(&id, &t2).await;
    let pass = admitted.str("pass").to_string();
    let verified = app
        .send(
            app.client
                .post(app.api("passes/verify"))
                .json(&serde_json::json!({ "token": pass })),
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["claims"]["room"], id.as_str());
    assert_eq!(
        verified.body["claims"]["sub"],
        admitted.str("ticket").split('.').nth(1).unwrap()
    );

    // Third is now first in line.
    app.settle(&id).await;
    assert_eq!(app.position(&id, &t3).await.u64("position"), 1);
    // The leaver's ticket now reads expired.
    assert_eq!(
        app.position(&id, first.str("ticket")).await.str("state"),
        "expired"
    );

    let status = app.status(&id).await;
    assert_eq!(status.u64("waiting"), 1);
    assert_eq!(status.u64("active"), 1);
    app.stop().await;
}

/// An admitted ticket's polls are answered from the node's memory after the pickup, on each
/// node that picked it up; a `leave` on one node still ends it on the other within a refresh
/// (the revocation is checked before the remembered session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_session_ends_on_every_node_when_the_shopper_leaves() {
    let redis = RedisServer::start().await;
    let id = room_id();
    let c = config(Some(redis.url()), vec![room(&id)]);
    let a = spawn_app(c.clone()).await;
    let b = spawn_app(c).await;
    let joined = a.join(&id, None, None).await;
    assert_eq!(joined.str("state"), "admitted", "{}", joined.body);
    let ticket = joined.str("ticket").to_string();
    // B learns of the admission from its next refresh, picks the session up once (one claim
    // in the store), then answers from memory: the same pass every time.
    wait_until(
        Duration::from_secs(5),
        "B knows of the admission",
        || async { b.position(&id, &ticket).await.str("state") == "admitted" },
    )
    .await;
    let first = b.position(&id, &ticket).await;
    assert_eq!(first.str("state"), "admitted", "{}", first.body);
    let pass = first.str("pass").to_string();
    assert!(!pass.is_empty(), "{}", first.body);
    for _ in 0..20 {
        let again = b.position(&id, &ticket).await;
        assert_eq!(again.str("state"), "admitted", "{}", again.body);
        assert_eq!(again.str("pass"), pass);
    }
    let left = a.leave(&id, &ticket).await;
    assert!(left.status.is_success(), "{}", left.body);
    // A knows at once; B from its next refresh.
    let on_a = a.position(&id, &ticket).await;
    assert_ne!(on_a.str("state"), "admitted", "{}", on_a.body);
    assert!(on_a.str("pass").is_empty(), "{}", on_a.body);
    wait_until(
        Duration::from_secs(5),
        "B stops handing out the ended session's pass",
        || async {
            let p = b.position(&id, &ticket).await;
            p.str("state") != "admitted" && p.str("pass").is_empty()
        },
    )
    .await;
    a.stop().await;
    b.stop().await;
}

// A node started against a store whose room is empty admits the first 500 concurrent joins at
// once (`max_active` and the admission rate's burst both allow them): nobody waits in a room
// with room, from the first request after start, on either store.
both_stores!(an_empty_room_admits_the_first_joins_at_once_after_start);
async fn an_empty_room_admits_the_first_joins_at_once_after_start(kind: StoreKind) {
    const JOINS: usize = 500;
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1_000;
    // One second's admissions is the burst the bucket allows at once: 1,000 here.
    r.admit_per_minute = 60_000;
    let app = spawn_app(config(url, vec![r])).await;
    let joins = futures::future::join_all((0..JOINS).map(|_| app.join(&id, None, None))).await;
    let states: std::collections::BTreeMap<String, usize> =
        joins.iter().fold(Default::default(), |mut m, j| {
            *m.entry(j.str("state").to_string()).or_default() += 1;
            m
        });
    assert_eq!(
        states,
        std::collections::BTreeMap::from([("admitted".to_string(), JOINS)]),
        "{states:?}"
    );
    for j in &joins {
        assert!(!j.str("pass").is_empty(), "{}", j.body);
    }
    app.stop().await;
}
