//! The sale half over HTTP: purchases with passes, reservations settled by the shop, coupons,
//! sold-out in the queue, and the no-oversell / exactly-once claims under thousands of
//! concurrent clients, on both stores (Redis with two rushgate nodes on one server).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::config::{Config, CouponConfig, SaleConfig, Secret};
use rushgate::store::sale::SaleState;
use serde_json::json;

use crate::both_stores;
use crate::harness::*;

const SHOP_KEY: &str = "test-shop-key-0123456789";

/// A config with one room and one sale behind it.
fn sale_config(url: Option<String>, room_id: &str, sale: SaleConfig) -> Config {
    let mut c = config(url, vec![room(room_id)]);
    c.sales = vec![sale];
    c.shop.api_key = Secret(SHOP_KEY.into());
    c
}

fn sale(id: &str, room: &str, stock: u64, per_user_limit: u32) -> SaleConfig {
    let mut s = SaleConfig::with_ids(id, room, stock);
    s.per_user_limit = per_user_limit;
    s
}

/// A pass for `user` in `room`, signed by the server's own key (what admission would give).
fn mint_pass(app: &TestApp, room: &str, user: &str) -> String {
    let state = &app.app.as_ref().expect("running").state;
    let now = rushgate::clock::now_ms() / 1000;
    state
        .passes
        .issue(room, user, 1, now, now + 600)
        .expect("pass")
}

async fn purchase(app: &TestApp, sale: &str, pass: &str, body: serde_json::Value) -> Reply {
    app.send(
        app.client
            .post(app.api(&format!("sales/{sale}/purchase")))
            .bearer_auth(pass)
            .json(&body),
    )
    .await
}

/// A purchase as a careful client makes it: with an idempotency key, retried after a transport
/// error or a 503 (the retry returns the same reservation if the first attempt went through).
async fn purchase_retrying(app: &TestApp, sale: &str, pass: &str, qty: i64, key: &str) -> Reply {
    let body = json!({ "quantity": qty, "idempotency_key": key });
    for _ in 0..10 {
        let sent = app
            .client
            .post(app.api(&format!("sales/{sale}/purchase")))
            .bearer_auth(pass)
            .json(&body)
            .send()
            .await;
        if let Ok(resp) = sent {
            let r = reply(resp).await;
            if r.status != StatusCode::SERVICE_UNAVAILABLE {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("purchase kept failing");
}

async fn settle(app: &TestApp, id: &str, action: &str, key: &str) -> Reply {
    app.send(
        app.client
            .post(app.api(&format!("reservations/{id}/{action}")))
            .bearer_auth(key),
    )
    .await
}

async fn claim(app: &TestApp, campaign: &str, user: &str) -> Reply {
    app.send(
        app.client
            .post(app.api(&format!("coupons/{campaign}/claim")))
            .json(&json!({ "user": user })),
    )
    .await
}

async fn sale_state(app: &TestApp, sale: &str) -> SaleState {
    let state = &app.app.as_ref().expect("running").state;
    state
        .sale_store
        .sale_state(&typed_sale(sale))
        .await
        .expect("sale state")
}

fn assert_problem(r: &Reply, status: StatusCode, slug: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "{}",
        r.body
    );
    assert_eq!(
        r.str("type"),
        format!("https://rushgate.dev/problems/{slug}"),
        "{}",
        r.body
    );
    assert!(!r.str("detail").is_empty());
}

fn assert_invariant(s: &SaleState, total: u64) {
    assert_eq!(
        s.available + s.reserved + s.confirmed,
        total,
        "available + reserved + confirmed != total: {s:?}"
    );
    assert_eq!(s.total, total, "{s:?}");
}

/// Waits until the node's stock gate for `room` satisfies `check`.
async fn wait_gate(app: &TestApp, room: &str, what: &str, check: impl Fn(u64, bool) -> bool) {
    let r = app
        .app
        .as_ref()
        .expect("running")
        .state
        .rooms
        .get(room)
        .expect("room")
        .clone();
    wait_until(Duration::from_secs(5), what, || {
        let g = r.stock_gate();
        let ok = g.is_some_and(|g| check(g.remaining, g.sold_out));
        async move { ok }
    })
    .await;
}

both_stores!(purchase_confirm_release_and_errors);
async fn purchase_confirm_release_and_errors(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let (room_id, sale_id, other_room) = (room_id(), room_id(), room_id());
    let mut c = sale_config(url, &room_id, sale(&sale_id, &room_id, 5, 2));
    c.rooms.push(room(&other_room));
    let app = spawn_app(c).await;
    wait_gate(&app, &room_id, "the sale is read", |remaining, _| {
        remaining == 5
    })
    .await;

    // A shopper admitted through the queue buys with the pass the room gave it.
    let joined = app.join(&room_id, Some("alice"), None).await;
    assert_eq!(joined.str("state"), "admitted", "{}", joined.body);
    assert_eq!(joined.u64("remaining"), 5);
    let pass = joined.str("pass").to_string();
    let first = purchase(
        &app,
        &sale_id,
        &pass,
        json!({"quantity": 1, "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.u64("quantity"), 1);
    assert_eq!(first.u64("remaining"), 4);
    assert!(first.u64("expires_at") > rushgate::clock::now_ms() / 1000);
    let rid = first.str("reservation_id").to_string();

    // The same idempotency key returns the same reservation and takes nothing more.
    for _ in 0..3 {
        let again = purchase(
            &app,
            &sale_id,
            &pass,
            json!({"quantity": 1, "idempotency_key": "k1"}),
        )
        .await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.body);
        assert_eq!(again.str("reservation_id"), rid);
    }
    assert_eq!(sale_state(&app, &sale_id).await.available, 4);

    // The pass cookie works as well as the bearer header.
    let by_cookie = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale_id}/purchase")))
                .header("cookie", format!("rg_pass_{room_id}={pass}"))
                .json(&json!({"quantity": 1})),
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::CREATED, "{}", by_cookie.body);

    // Rejections, each with its problem, none touching stock.
    let before = sale_state(&app, &sale_id).await;
    let over = purchase(&app, &sale_id, &pass, json!({"quantity": 1})).await;
    assert_problem(&over, StatusCode::CONFLICT, "limit-reached");
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("1"),
        json!(2_147_483_648u64),
        json!(true),
    ] {
        let r = purchase(&app, &sale_id, &pass, json!({ "quantity": bad })).await;
        assert_problem(&r, StatusCode::BAD_REQUEST, "invalid-field");
    }
    let malformed = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale_id}/purchase")))
                .bearer_auth(&pass)
                .body("{\"quantity\":"),
        )
        .await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST, "malformed-json");
    let no_pass = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale_id}/purchase")))
                .json(&json!({"quantity": 1})),
        )
        .await;
    assert_problem(&no_pass, StatusCode::UNAUTHORIZED, "missing-pass");
    let forged = purchase(&app, &sale_id, &format!("{pass}x"), json!({"quantity": 1})).await;
    assert_problem(&forged, StatusCode::UNAUTHORIZED, "invalid-pass");
    let state = &app.app.as_ref().expect("running").state;
    let old = rushgate::clock::now_ms() / 1000 - 3600;
    let expired = state
        .passes
        .issue(&room_id, "bob", 1, old, old + 60)
        .expect("pass");
    let r = purchase(&app, &sale_id, &expired, json!({"quantity": 1})).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "invalid-pass");
    let elsewhere = mint_pass(&app, &other_room, "carol");
    let r = purchase(&app, &sale_id, &elsewhere, json!({"quantity": 1})).await;
    assert_problem(&r, StatusCode::FORBIDDEN, "pass-wrong-room");
    let r = purchase(&app, "nosuchsale", &pass, json!({"quantity": 1})).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "unknown-sale");
    let bob = mint_pass(&app, &room_id, "bob");
    let r = purchase(&app, &sale_id, &bob, json!({"quantity": 4})).await;
    assert_problem(&r, StatusCode::CONFLICT, "limit-reached");
    assert_eq!(
        sale_state(&app, &sale_id).await,
        before,
        "a rejected request changed stock"
    );

    // The shop confirms with its key; retries are harmless; other transitions conflict.
    let r = settle(&app, &rid, "confirm", "wrong-key").await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "shop-unauthorized");
    let r = app
        .send(
            app.client
                .post(app.api(&format!("reservations/{rid}/confirm"))),
        )
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "shop-unauthorized");
    let r = settle(&app, &rid, "confirm", SHOP_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.str("state"), "confirmed");
    assert_eq!(r.body["changed"], true);
    let r = settle(&app, &rid, "confirm", SHOP_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["changed"], false);
    let r = settle(&app, &rid, "release", SHOP_KEY).await;
    assert_problem(&r, StatusCode::CONFLICT, "reservation-conflict");
    let r = settle(&app, &format!("{sale_id}.nope"), "confirm", SHOP_KEY).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "unknown-reservation");
    let r = settle(&app, "garbage", "release", SHOP_KEY).await;
    assert_problem(&r, StatusCode::NOT_FOUND, "unknown-reservation");

    // Releasing returns the units to stock, once.
    let second = by_cookie.str("reservation_id").to_string();
    let r = settle(&app, &second, "release", SHOP_KEY).await;
    assert_eq!(r.str("state"), "released", "{}", r.body);
    let r = settle(&app, &second, "release", SHOP_KEY).await;
    assert_eq!(r.body["changed"], false, "{}", r.body);
    let s = sale_state(&app, &sale_id).await;
    assert_eq!((s.available, s.reserved, s.confirmed), (4, 0, 1));
    assert_invariant(&s, 5);
    app.stop().await;
}

both_stores!(coupons_first_come);
async fn coupons_first_come(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let (room_id, open, gated) = (room_id(), room_id(), room_id());
    let mut c = config(url, vec![room(&room_id)]);
    c.coupons = vec![
        CouponConfig {
            id: open.clone(),
            limit: 3,
            room: None,
        },
        CouponConfig {
            id: gated.clone(),
            limit: 10,
            room: Some(room_id.clone()),
        },
    ];
    let app = spawn_app(c).await;

    let a = claim(&app, &open, "ann").await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.u64("serial"), 1);
    let code = a.str("code").to_string();
    assert!(
        code.starts_with(&format!("{}-", open.to_uppercase())),
        "{code}"
    );
    let again = claim(&app, &open, "ann").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!((again.u64("serial"), again.str("code")), (1, code.as_str()));
    assert_eq!(claim(&app, &open, "ben").await.u64("serial"), 2);
    assert_eq!(claim(&app, &open, "cat").await.u64("serial"), 3);
    assert_problem(
        &claim(&app, &open, "dan").await,
        StatusCode::CONFLICT,
        "coupon-exhausted",
    );
    assert_eq!(claim(&app, &open, "ben").await.status, StatusCode::OK);
    let r = app
        .send(
            app.client
                .post(app.api(&format!("coupons/{open}/claim")))
                .json(&json!({})),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "invalid-field");
    assert_problem(
        &claim(&app, "nosuch", "ann").await,
        StatusCode::NOT_FOUND,
        "unknown-coupon",
    );

    // A campaign behind a room takes the user from the pass.
    let r = claim(&app, &gated, "ann").await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "missing-pass");
    let pass = mint_pass(&app, &room_id, "u-pass-holder");
    let r = app
        .send(
            app.client
                .post(app.api(&format!("coupons/{gated}/claim")))
                .bearer_auth(&pass),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let state = &app.app.as_ref().expect("running").state;
    assert_eq!(
        state
            .sale_store
            .coupon_log_len(&typed_campaign(&open))
            .await
            .expect("log"),
        3
    );
    app.stop().await;
}

both_stores!(sold_out_reaches_waiters_and_restock_reopens);
async fn sold_out_reaches_waiters_and_restock_reopens(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let (room_id, sale_id) = (room_id(), room_id());
    let app = spawn_app(sale_config(url, &room_id, sale(&sale_id, &room_id, 2, 2))).await;
    wait_gate(&app, &room_id, "the sale is read", |remaining, _| {
        remaining == 2
    })
    .await;

    // Stock-aware admission: two units admit two shoppers; the others wait.
    let mut joined = Vec::new();
    for i in 0..5 {
        joined.push(app.join(&room_id, Some(&format!("user{i}")), None).await);
    }
    let admitted: Vec<&Reply> = joined
        .iter()
        .filter(|r| r.str("state") == "admitted")
        .collect();
    assert_eq!(
        admitted.len(),
        2,
        "{:?}",
        joined.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
    );
    let waiter = joined
        .iter()
        .find(|r| r.str("state") == "waiting")
        .expect("a waiter");
    let ticket = waiter.str("ticket").to_string();

    // The first buyer takes both units: held by a reservation, waiters keep their place.
    let r = purchase(
        &app,
        &sale_id,
        admitted[0].str("pass"),
        json!({"quantity": 2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rid = r.str("reservation_id").to_string();
    wait_gate(&app, &room_id, "remaining 0", |remaining, sold_out| {
        remaining == 0 && !sold_out
    })
    .await;
    let p = app.position(&room_id, &ticket).await;
    assert_eq!(
        (p.str("state"), p.u64("remaining")),
        ("waiting", 0),
        "{}",
        p.body
    );
    let r = purchase(
        &app,
        &sale_id,
        admitted[1].str("pass"),
        json!({"quantity": 1}),
    )
    .await;
    assert_problem(&r, StatusCode::CONFLICT, "sold-out");

    // Paid: nothing can come back, so waiters hear "sold out" within a second, and so do joins.
    assert_eq!(
        settle(&app, &rid, "confirm", SHOP_KEY).await.status,
        StatusCode::OK
    );
    let confirmed_at = std::time::Instant::now();
    let (a, t) = (&app, ticket.clone());
    let rid2 = room_id.clone();
    wait_until(Duration::from_secs(1), "waiters see sold_out", || {
        let t = t.clone();
        let rid2 = rid2.clone();
        async move { a.position(&rid2, &t).await.str("state") == "sold_out" }
    })
    .await;
    assert!(confirmed_at.elapsed() <= Duration::from_secs(1));
    let late = app.join(&room_id, Some("late"), None).await;
    assert_eq!(late.str("state"), "sold_out", "{}", late.body);
    assert!(late.body["ticket"].is_null());

    // Restock: the room reopens and the waiters move on.
    let state = &app.app.as_ref().expect("running").state;
    state
        .sale_store
        .add_stock(&typed_sale(&sale_id), 3, rushgate::clock::now_ms())
        .await
        .expect("add");
    let (a, t, rid2) = (&app, ticket.clone(), room_id.clone());
    wait_until(
        Duration::from_secs(5),
        "the waiter is admitted after restock",
        || {
            let (t, rid2) = (t.clone(), rid2.clone());
            async move { a.position(&rid2, &t).await.str("state") == "admitted" }
        },
    )
    .await;
    let s = sale_state(&app, &sale_id).await;
    assert_invariant(&s, 5);
    app.stop().await;
}

/// Two nodes on one Redis (or one embedded node).
async fn nodes(
    kind: StoreKind,
    c: impl Fn(Option<String>) -> Config,
) -> (Option<RedisServer>, Vec<TestApp>) {
    let (redis, url) = store_url(kind).await;
    let mut apps = vec![spawn_app(c(url.clone())).await];
    if url.is_some() {
        apps.push(spawn_app(c(url)).await);
    }
    // Selling starts once every node's keeper has created or read the stock record.
    for app in &apps {
        app.wait_sales_read().await;
    }
    (redis, apps)
}

/// Samples the sale's counters until `stop`, checking the invariant at every observation.
fn watch_invariant(
    app: &TestApp,
    sale: &str,
    total: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let store = app.app.as_ref().expect("running").state.sale_store.clone();
    let sale = sale.to_string();
    tokio::spawn(async move {
        let mut seen = 0;
        while !stop.load(Ordering::Relaxed) {
            // An overloaded machine may time a read out; the next one observes again.
            let Ok(s) = store.sale_state(&typed_sale(&sale)).await else {
                continue;
            };
            assert_eq!(
                s.available + s.reserved + s.confirmed,
                total,
                "invariant broken: {s:?}"
            );
            seen += 1;
            tokio::task::yield_now().await;
        }
        seen
    })
}

both_stores!(twenty_thousand_purchases_never_oversell);
async fn twenty_thousand_purchases_never_oversell(kind: StoreKind) {
    let (room_id, sale_id) = (room_id(), room_id());
    let (_redis, apps) = nodes(kind, |url| {
        sale_config(url, &room_id, sale(&sale_id, &room_id, 1_000, 2))
    })
    .await;
    let users: Vec<String> = (0..5_000).map(|i| format!("buyer{i}")).collect();
    let passes: Vec<String> = users
        .iter()
        .map(|u| mint_pass(&apps[0], &room_id, u))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_invariant(&apps[0], &sale_id, 1_000, stop.clone());

    // 20,000 attempts: every user four times, quantities 1 or 2, spread over both nodes.
    let attempts: Vec<(usize, u64, usize)> = (0..20_000)
        .map(|i| (i % 5_000, 1 + (i / 5_000) as u64 % 2, i))
        .collect();
    let results: Vec<(usize, u64, Reply)> = stream::iter(attempts)
        .map(|(u, qty, i)| {
            let app = &apps[u % apps.len()];
            let pass = &passes[u];
            let sale_id = &sale_id;
            async move {
                let key = format!("attempt-{i}");
                (
                    u,
                    qty,
                    purchase_retrying(app, sale_id, pass, qty as i64, &key).await,
                )
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    stop.store(true, Ordering::Relaxed);
    assert!(watcher.await.expect("watcher") > 0);

    let mut held: HashMap<usize, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for (u, qty, r) in &results {
        match r.status {
            // 200: a retry after a lost answer found the reservation its first attempt made.
            StatusCode::CREATED | StatusCode::OK => {
                assert_eq!(r.u64("quantity"), *qty);
                *held.entry(*u).or_default() += qty;
                assert!(
                    ids.insert(r.str("reservation_id").to_string()),
                    "duplicate reservation"
                );
            }
            StatusCode::CONFLICT => {
                assert!(
                    ["sold-out", "limit-reached", "insufficient-stock"]
                        .iter()
                        .any(|s| r.str("type").ends_with(s)),
                    "{}",
                    r.body
                );
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(held.values().sum::<u64>(), 1_000, "units reserved");
    assert!(held.values().all(|&h| h <= 2), "a user above the limit");
    let s = sale_state(&apps[0], &sale_id).await;
    assert_eq!((s.available, s.reserved, s.confirmed), (0, 1_000, 0));
    let store = &apps[0].app.as_ref().expect("running").state.sale_store;
    assert_eq!(
        store
            .order_events(&typed_sale(&sale_id))
            .await
            .expect("events"),
        ids.len() as u64
    );
    for app in apps {
        app.stop().await;
    }
}

both_stores!(stock_boundary_hundred_of_two_thousand);
async fn stock_boundary_hundred_of_two_thousand(kind: StoreKind) {
    let (room_id, sale_id) = (room_id(), room_id());
    let (_redis, apps) = nodes(kind, |url| {
        sale_config(url, &room_id, sale(&sale_id, &room_id, 100, 1))
    })
    .await;
    let passes: Vec<String> = (0..2_000)
        .map(|i| mint_pass(&apps[0], &room_id, &format!("b{i}")))
        .collect();

    // Zero and negative quantities first, concurrently: nothing changes.
    let bad: Vec<Reply> = stream::iter(0..200)
        .map(|i| {
            let app = &apps[i % apps.len()];
            let (pass, sale_id) = (&passes[i], &sale_id);
            async move { purchase_retrying(app, sale_id, pass, -(i as i64 % 3), "bad").await }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    for r in &bad {
        assert_problem(r, StatusCode::BAD_REQUEST, "invalid-field");
    }
    assert_eq!(sale_state(&apps[0], &sale_id).await.available, 100);

    let results: Vec<Reply> = stream::iter(0..2_000)
        .map(|i| {
            let app = &apps[i % apps.len()];
            let (pass, sale_id) = (&passes[i], &sale_id);
            async move { purchase_retrying(app, sale_id, pass, 1, "buy").await }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut reserved = HashSet::new();
    for r in &results {
        if r.status == StatusCode::CREATED || r.status == StatusCode::OK {
            assert!(reserved.insert(r.str("reservation_id").to_string()));
        } else {
            assert_problem(r, StatusCode::CONFLICT, "sold-out");
        }
    }
    assert_eq!(reserved.len(), 100);
    let s = sale_state(&apps[0], &sale_id).await;
    assert_eq!((s.available, s.reserved), (0, 100));
    for app in apps {
        app.stop().await;
    }
}

both_stores!(twenty_thousand_coupon_claims);
async fn twenty_thousand_coupon_claims(kind: StoreKind) {
    let campaign = room_id();
    let (_redis, apps) = nodes(kind, |url| {
        let mut c = config(url, vec![room(&room_id())]);
        c.coupons = vec![CouponConfig {
            id: campaign.clone(),
            limit: 10_000,
            room: None,
        }];
        c
    })
    .await;
    // 15,000 users, 5,000 of them claiming twice.
    let claims: Vec<usize> = (0..20_000).map(|i| i % 15_000).collect();
    let results: Vec<(usize, Reply)> = stream::iter(claims)
        .map(|u| {
            let app = &apps[u % apps.len()];
            let campaign = &campaign;
            async move { (u, claim(app, campaign, &format!("shopper{u}")).await) }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let mut by_user: HashMap<usize, u64> = HashMap::new();
    let mut serials = HashSet::new();
    let mut codes = HashSet::new();
    for (u, r) in &results {
        match r.status {
            StatusCode::CREATED => {
                assert!(serials.insert(r.u64("serial")), "serial issued twice");
                assert!(codes.insert(r.str("code").to_string()), "code issued twice");
                assert!(
                    by_user.insert(*u, r.u64("serial")).is_none(),
                    "user got two coupons"
                );
            }
            StatusCode::OK => {}
            _ => assert_problem(r, StatusCode::CONFLICT, "coupon-exhausted"),
        }
    }
    // Repeat claims answer the user's own coupon.
    for (u, r) in results.iter().filter(|(_, r)| r.status == StatusCode::OK) {
        assert_eq!(Some(&r.u64("serial")), by_user.get(u));
    }
    assert_eq!(serials.len(), 10_000);
    assert_eq!(serials, (1..=10_000).collect::<HashSet<u64>>());
    let store = &apps[0].app.as_ref().expect("running").state.sale_store;
    assert_eq!(
        store
            .coupon_log_len(&typed_campaign(&campaign))
            .await
            .expect("log"),
        10_000
    );
    for app in apps {
        app.stop().await;
    }
}

both_stores!(expiry_swept_by_every_node_returns_units_once);
async fn expiry_swept_by_every_node_returns_units_once(kind: StoreKind) {
    let (room_id, sale_id) = (room_id(), room_id());
    let (_redis, apps) = nodes(kind, |url| {
        let mut s = sale(&sale_id, &room_id, 50, 5);
        s.reservation_seconds = 1;
        sale_config(url, &room_id, s)
    })
    .await;
    let results: Vec<Reply> = stream::iter(0..20)
        .map(|i| {
            let app = &apps[i % apps.len()];
            let pass = mint_pass(&apps[0], &room_id, &format!("e{i}"));
            let sale_id = &sale_id;
            async move {
                purchase(
                    app,
                    sale_id,
                    &pass,
                    json!({"quantity": 2, "idempotency_key": "x"}),
                )
                .await
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    for r in &results {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    assert_eq!(sale_state(&apps[0], &sale_id).await.available, 10);
    // Every node sweeps every second; the units come back exactly once.
    let a = &apps[0];
    let sid = sale_id.clone();
    wait_until(Duration::from_secs(10), "reservations expire", || {
        let sid = sid.clone();
        async move { sale_state(a, &sid).await.reserved == 0 }
    })
    .await;
    // Give the other node's sweeper several more rounds to (wrongly) return units again.
    let store = apps[0]
        .app
        .as_ref()
        .expect("running")
        .state
        .sale_store
        .clone();
    let events_after_expiry = store
        .order_events(&typed_sale(&sale_id))
        .await
        .expect("events");
    let sid = sale_id.clone();
    let st = store.clone();
    wait_until(Duration::from_secs(10), "every node swept again", || {
        let (sid, st) = (sid.clone(), st.clone());
        async move {
            st.sweep(&typed_sale(&sid), rushgate::clock::now_ms(), 1000)
                .await
                .expect("sweep")
                == 0
        }
    })
    .await;
    let s = sale_state(&apps[0], &sale_id).await;
    assert_eq!((s.available, s.reserved), (50, 0), "{s:?}");
    assert_invariant(&s, 50);
    // 20 reserved + 20 expired events, never more.
    assert_eq!(events_after_expiry, 40);
    assert_eq!(
        store
            .order_events(&typed_sale(&sale_id))
            .await
            .expect("events"),
        40
    );
    // The idempotency key still names the (now expired) reservation: no second take.
    let pass = mint_pass(&apps[0], &room_id, "e0");
    let r = purchase(
        &apps[0],
        &sale_id,
        &pass,
        json!({"quantity": 2, "idempotency_key": "x"}),
    )
    .await;
    assert_eq!(
        (r.status, r.str("state")),
        (StatusCode::OK, "expired"),
        "{}",
        r.body
    );
    assert_eq!(sale_state(&apps[0], &sale_id).await.available, 50);
    for app in apps {
        app.stop().await;
    }
}

/// Durability: with AOF `appendfsync always`, every acknowledged reservation survives SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_purchases_survive_sigkill_with_aof_always() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let (room_id, sale_id) = (room_id(), room_id());
    let app = spawn_app(sale_config(
        Some(redis.url()),
        &room_id,
        sale(&sale_id, &room_id, 500, 1),
    ))
    .await;
    wait_gate(&app, &room_id, "the sale is read", |remaining, _| {
        remaining == 500
    })
    .await;
    let passes: Vec<String> = (0..400)
        .map(|i| mint_pass(&app, &room_id, &format!("d{i}")))
        .collect();

    // Kill Redis while purchases are in flight.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ack = acknowledged.clone();
    let buyers = {
        let app = &app;
        let passes = &passes;
        let sale_id = &sale_id;
        stream::iter(0..400)
            .map(move |i| {
                let ack = ack.clone();
                async move {
                    let r = purchase(app, sale_id, &passes[i], json!({"quantity": 1})).await;
                    if r.status == StatusCode::CREATED {
                        ack.lock()
                            .expect("lock")
                            .push(r.str("reservation_id").to_string());
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
    };
    let killer = async {
        let ack = acknowledged.clone();
        wait_until(
            Duration::from_secs(20),
            "some purchases are acknowledged",
            || {
                let n = ack.lock().expect("lock").len();
                async move { n >= 100 }
            },
        )
        .await;
        redis.kill();
    };
    tokio::join!(buyers, killer);
    redis.restart().await;

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 100);
    let rsv_key = format!("rg:{{{sale_id}}}:rsv");
    for id in &acknowledged {
        let rec = redis.cli(&["HGET", &rsv_key, id]);
        assert!(
            rec.starts_with("reserved|"),
            "acknowledged reservation {id} lost: {rec:?}"
        );
    }
    let stock_key = format!("rg:{{{sale_id}}}:stock");
    let field = |f: &str| -> u64 {
        redis
            .cli(&["HGET", &stock_key, f])
            .trim()
            .parse()
            .expect("number")
    };
    let (available, reserved, confirmed) =
        (field("available"), field("reserved"), field("confirmed"));
    assert_eq!(available + reserved + confirmed, 500);
    assert!(reserved >= acknowledged.len() as u64);
    app.stop().await;
}

/// `rushgate sale add-stock` changes the shared stock; a sold-out room reopens on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_add_stock_cli_restocks_a_sold_out_room() {
    let redis = RedisServer::start().await;
    let (room_id, sale_id) = (room_id(), room_id());
    let cfg = sale_config(Some(redis.url()), &room_id, sale(&sale_id, &room_id, 1, 1));
    let app = spawn_app(cfg.clone()).await;
    wait_gate(&app, &room_id, "the sale is read", |remaining, _| {
        remaining == 1
    })
    .await;
    let pass = mint_pass(&app, &room_id, "only-buyer");
    let r = purchase(&app, &sale_id, &pass, json!({"quantity": 1})).await;
    assert_eq!(
        settle(&app, r.str("reservation_id"), "confirm", SHOP_KEY)
            .await
            .status,
        StatusCode::OK
    );
    wait_gate(&app, &room_id, "sold out", |_, sold_out| sold_out).await;

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("rushgate.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
            .args([
                "sale",
                "add-stock",
                "--config",
                path.to_str().expect("utf8"),
            ])
            .args(args)
            .output()
            .expect("run rushgate")
    };
    let out = run(&[&sale_id, "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("+5 units applied; available 5"), "{stdout}");
    wait_gate(&app, &room_id, "the room reopens", |remaining, sold_out| {
        remaining == 5 && !sold_out
    })
    .await;
    // Removing more than is unsold removes only the unsold units.
    let out = run(&[&sale_id, "-9"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("-5 units applied; available 0"));
    let s = sale_state(&app, &sale_id).await;
    assert_invariant(&s, 1);
    let out = run(&["nosuchsale", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sale `nosuchsale`"));
    app.stop().await;
}
