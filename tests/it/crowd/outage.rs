//! Store outages and shutdown: Redis dies and comes back under a running server (fail closed and
//! fail open), and a graceful shutdown writes the batched liveness records.

use std::time::Duration;

use futures::stream::{self, StreamExt};

use reqwest::StatusCode;
use rushgate::clock::now_ms;
use rushgate::config::OnStoreError;
use rushgate::queue::params_for;

use super::{cli_u64, identity_of, key, seq_of};
use crate::harness::*;

async fn wait_ready(app: &TestApp, code: u16, what: &str) {
    wait_until(Duration::from_secs(15), what, || async move {
        app.admin_get("/readyz").await.status.as_u16() == code
    })
    .await;
}

/// Fail closed: with Redis killed the server stays live, turns unready and refuses joins with a
/// 503 problem + `Retry-After`, while waiters' polls are still answered from the cache. Redis
/// restarted on the same port (its AOF keeps the queue): ready again, joins and admissions work,
/// and a waiter from before the outage still holds its place — with no rushgate restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers_without_restart() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut cfg = config(Some(redis.url()), vec![r]);
    // Calls to the dead store give up after half a second.
    cfg.store.command_timeout_ms = 500;
    let app = spawn_app(cfg).await;
    wait_ready(&app, 200, "ready before the outage").await;

    let holder = app.join(&id, None, None).await;
    assert_eq!(holder.str("state"), "admitted", "{}", holder.body);
    let waiter = app.join(&id, Some("early-bird"), None).await;
    let second = app.join(&id, None, None).await;
    assert_eq!(waiter.u64("position"), 1, "{}", waiter.body);
    assert_eq!(second.u64("position"), 2, "{}", second.body);
    let ticket = waiter.str("ticket").to_string();
    app.settle(&id).await;

    redis.kill();
    wait_ready(&app, 503, "/readyz reports the store down").await;
    let ready = app.admin_get("/readyz").await;
    assert!(ready.headers.contains_key("retry-after"));
    assert_eq!(app.admin_get("/livez").await.status, StatusCode::OK);

    let refused = app.join(&id, None, None).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(
        refused.headers["content-type"], "application/problem+json",
        "{:?}",
        refused.headers
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert_eq!(refused.body["status"], 503);
    assert!(
        refused.str("type").ends_with("/store-unavailable"),
        "{}",
        refused.body
    );
    // A user key cannot sneak in either, and leaving needs the store too.
    let refused = app.join(&id, Some("latecomer"), None).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    // The waiter's poll never needs the store: still answered, same place.
    let during = app.position(&id, &ticket).await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);
    assert_eq!(during.str("state"), "waiting");
    assert_eq!(during.u64("position"), 1);
    assert_eq!(app.admin_get("/livez").await.status, StatusCode::OK);

    redis.restart().await;
    wait_ready(&app, 200, "/readyz recovers once Redis is back").await;
    app.settle(&id).await;
    app.settle(&id).await;

    // The queue survived in Redis, and the early waiter still stands first.
    assert_eq!(
        cli_u64(&redis, &["ZSCORE", &key(&id, "q"), &identity_of(&ticket)]),
        seq_of(&ticket)
    );
    let after = app.position(&id, &ticket).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    assert_eq!(after.str("state"), "waiting", "{}", after.body);
    assert_eq!(after.u64("position"), 1);
    let again = app.join(&id, Some("early-bird"), None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(seq_of(again.str("ticket")), seq_of(&ticket));
    assert_eq!(again.u64("position"), 1);

    // New joins work again and queue behind.
    let fresh = app.join(&id, None, None).await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.body);
    assert_eq!(fresh.str("state"), "waiting");
    assert_eq!(fresh.u64("position"), 3, "{}", fresh.body);

    // Admission resumes: the holder leaves and the early waiter gets in.
    let left = app.leave(&id, holder.str("ticket")).await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.body);
    wait_until(
        Duration::from_secs(10),
        "the early waiter is admitted",
        || {
            let (app, id, t) = (&app, &id, &ticket);
            async move { app.position(id, t).await.str("state") == "admitted" }
        },
    )
    .await;
    app.settle(&id).await;
    assert_eq!(
        app.position(&id, second.str("ticket"))
            .await
            .u64("position"),
        1
    );
    app.stop().await;
}

/// A join that races Redis going away is refused like any other store failure (503 problem +
/// `Retry-After`), never answered as an internal error. Each round kills Redis under a warm
/// connection pool and fires a burst of joins at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_a_redis_crash_get_503_never_500() {
    const ROUNDS: usize = 16;
    const BURST: usize = 24;
    let mut redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut cfg = config(Some(redis.url()), vec![r]);
    cfg.store.command_timeout_ms = 500;
    let app = spawn_app(cfg).await;
    let (app_ref, id_ref) = (&app, &id);
    let mut wrong = Vec::new();
    for round in 0..ROUNDS {
        // Redis (back) up and every pooled connection carrying traffic.
        wait_until(Duration::from_secs(15), "joins succeed", || async move {
            app_ref.join(id_ref, None, None).await.status.is_success()
        })
        .await;
        for _ in 0..8 {
            let j = app.join(&id, None, None).await;
            assert!(j.status.is_success(), "{}", j.body);
        }
        redis.kill();
        let replies: Vec<Reply> = stream::iter(0..BURST)
            .map(|_| async move { app_ref.join(id_ref, None, None).await })
            .buffer_unordered(BURST)
            .collect()
            .await;
        for reply in replies {
            if reply.status != StatusCode::SERVICE_UNAVAILABLE
                || !reply.headers.contains_key("retry-after")
            {
                wrong.push((round, reply.status, reply.body));
            }
        }
        redis.restart().await;
    }
    assert!(
        wrong.is_empty(),
        "joins during a Redis crash answered other than 503 + Retry-After: {wrong:?}"
    );
    app.stop().await;
}

/// Fail open: with Redis down, a join is admitted directly with a valid pass (and so is a poll
/// of that ticket), while readiness still reports the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_open_when_configured() {
    let mut redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut cfg = config(Some(redis.url()), vec![r]);
    cfg.store.on_store_error = OnStoreError::FailOpen;
    cfg.store.command_timeout_ms = 500;
    let app = spawn_app(cfg).await;
    wait_ready(&app, 200, "ready before the outage").await;
    // The room is full, so with Redis up a shopper would wait.
    assert_eq!(app.join(&id, None, None).await.str("state"), "admitted");
    assert_eq!(app.join(&id, None, None).await.str("state"), "waiting");

    redis.kill();
    wait_ready(&app, 503, "/readyz reports the store down").await;
    let joined = app.join(&id, None, None).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    assert_eq!(joined.str("state"), "admitted", "{}", joined.body);
    let pass = joined.str("pass").to_string();
    assert!(!pass.is_empty(), "{}", joined.body);
    assert!(
        joined
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("rg_pass_{id}="))),
        "{:?}",
        joined.set_cookies()
    );
    let verified = app
        .send(
            app.client
                .post(app.api("passes/verify"))
                .json(&serde_json::json!({ "token": pass })),
        )
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
    assert_eq!(verified.body["valid"], true);
    assert_eq!(verified.body["claims"]["room"], id.as_str());

    let polled = app.position(&id, joined.str("ticket")).await;
    assert_eq!(polled.status, StatusCode::OK, "{}", polled.body);
    assert_eq!(polled.str("state"), "admitted", "{}", polled.body);
    assert!(!polled.str("pass").is_empty());
    assert_eq!(
        app.admin_get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.stop().await;
}

/// Polls are recorded in memory and written by the pacer in batches; a graceful shutdown writes
/// what is still buffered, so no polled waiter looks idle afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_buffered_liveness_records() {
    const WAITERS: usize = 50;
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    // Liveness intervals of 2 s; the bitmaps outlive the test.
    r.idle_timeout_seconds = 20;
    let params = params_for(&r);
    let mut cfg = config(Some(redis.url()), vec![r]);
    // The pacer steps once at start and then not again for 5 s: nothing it does in between can
    // write the records under test; only the shutdown flush can.
    cfg.store.refresh_ms = 5_000;
    let app = spawn_app(cfg).await;
    let room = app
        .app
        .as_ref()
        .unwrap()
        .state
        .rooms
        .get(&id)
        .unwrap()
        .clone();
    wait_until(Duration::from_secs(5), "the first pacer step", || {
        let room = room.clone();
        async move { room.snapshot().taken_at.is_some() }
    })
    .await;
    let first_step = room.snapshot().taken_at;

    assert_eq!(app.join(&id, None, None).await.str("state"), "admitted");
    let mut tickets = Vec::new();
    for _ in 0..WAITERS {
        let j = app.join(&id, None, None).await;
        assert_eq!(j.str("state"), "waiting", "{}", j.body);
        tickets.push(j.str("ticket").to_string());
    }
    // Joins mark their own interval in the store; poll in a later one so only the polls' records
    // can set the bits checked below.
    let joined_in = params.interval_of(now_ms());
    wait_until(
        Duration::from_secs(5),
        "the next liveness interval",
        || async move { params.interval_of(now_ms()) > joined_in },
    )
    .await;
    let polled_in = params.interval_of(now_ms());
    for t in &tickets {
        let p = app.position(&id, t).await;
        assert_eq!(p.str("state"), "waiting", "{}", p.body);
    }
    assert_eq!(
        params.interval_of(now_ms()),
        polled_in,
        "the polls straddled two liveness intervals"
    );
    let bitmap = key(&id, &format!("alive:{polled_in}"));
    assert_eq!(
        room.snapshot().taken_at,
        first_step,
        "the pacer stepped again before the shutdown (machine too slow for this test)"
    );
    assert_eq!(
        redis.cli(&["EXISTS", &bitmap]).trim(),
        "0",
        "the polls' records are still only in memory"
    );

    app.stop().await;

    for t in &tickets {
        assert_eq!(
            redis
                .cli(&["GETBIT", &bitmap, &seq_of(t).to_string()])
                .trim(),
            "1",
            "waiter {} was polled but is not marked alive after shutdown",
            seq_of(t)
        );
    }
    assert_eq!(cli_u64(&redis, &["BITCOUNT", &bitmap]), WAITERS as u64);
    assert!(
        cli_u64(&redis, &["PTTL", &bitmap]) > 0,
        "the bitmap expires"
    );
}
