//! rushgate on each real topology: a TLS-only Redis (with a client certificate, and refused
//! with a CA that does not sign the server), a Sentinel-watched master that fails over during a
//! sale, and a Redis Cluster with two rooms on different masters and a master failover during
//! a drop. Each runs the shopper's path over HTTP (join, poll, admission, purchase, confirm,
//! coupon claim, admin API) and the operations tour (expiry sweep, a webhook delivered once,
//! pause and resume, reload), and checks the sale never oversells.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::config::{Config, CouponConfig, SaleConfig, Secret, SentinelConfig, WebhookConfig};
use serde_json::json;

use super::{ClientAuth, Cluster, SentinelSet, TlsRedis};
use crate::api::webhooks::{count, receiver, Received, SECRET};
use crate::harness::*;

const SHOP_KEY: &str = "topology-shop-key-0123456789";
const ADMIN_TOKEN: &str = "topology-admin-token-0123456789";

/// Adds the operations tour's room `tour` to `c`: a sale of one unit whose reservations hold
/// for one second, a webhook for `room.paused` to `hook`, and an admin token.
fn with_tour(c: &mut Config, tour: &str, hook: &str) {
    c.rooms.push(room(tour));
    let mut sale = SaleConfig::with_ids(&format!("s{}", &tour[1..]), tour, 1);
    sale.reservation_seconds = 1;
    c.sales.push(sale);
    c.webhooks = vec![WebhookConfig {
        url: hook.to_string(),
        ca_file: None,
        events: vec!["room.paused".into()],
        secret: Secret(SECRET.into()),
    }];
    c.admin.token = Secret(ADMIN_TOKEN.into());
}

/// Operations beyond the shopper's path on a node started from a file (see [`with_tour`]): an
/// unpaid reservation expires and the keeper's sweep returns its unit; pausing the room
/// delivers `room.paused` to the receiver exactly once (however many nodes there are); the
/// room resumes; a reload of the file applies.
async fn operations_tour(app: &TestApp, tour: &str, got: &Received) {
    let state = &app.app.as_ref().expect("running").state;
    let now = rushgate::clock::now_ms() / 1000;
    let pass = state
        .passes
        .issue(tour, "tour-buyer", 1, now, now + 600)
        .expect("pass");
    let sale = format!("s{}", &tour[1..]);
    let bought = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale}/purchase")))
                .bearer_auth(&pass)
                .json(&json!({ "quantity": 1 })),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let store = &state.sale_store;
    wait_until(
        Duration::from_secs(15),
        "the unpaid reservation expires and the sweep returns its unit",
        || async {
            store
                .sale_state(&typed_sale(&sale))
                .await
                .is_ok_and(|s| s.available == 1 && s.reserved == 0)
        },
    )
    .await;
    let admin = |action: &str| {
        app.client
            .post(format!("{}/admin/v1/{action}", app.admin))
            .bearer_auth(ADMIN_TOKEN)
    };
    let paused = app.send(admin(&format!("rooms/{tour}/pause"))).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    wait_until(
        Duration::from_secs(15),
        "room.paused reaches the receiver",
        || async { count(got, "room.paused") >= 1 },
    )
    .await;
    let resumed = app.send(admin(&format!("rooms/{tour}/resume"))).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    let reloaded = app.send(admin("reload")).await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    // Once, from any number of nodes (the delivery claim is a key of the room's slot).
    assert_eq!(count(got, "room.paused"), 1);
}

/// A config on `redis_url` (or none) with rooms, a sale of `stock` units behind the first room
/// and a coupon campaign for it.
fn shop_config(redis_url: Option<String>, rooms: &[String], stock: u64) -> Config {
    let mut c = config(redis_url, rooms.iter().map(|r| room(r)).collect());
    c.sales = rooms
        .iter()
        .map(|r| SaleConfig::with_ids(&format!("s{}", &r[1..]), r, stock))
        .collect();
    c.coupons = vec![CouponConfig {
        id: format!("c{}", &rooms[0][1..]),
        limit: 5,
        room: Some(rooms[0].clone()),
    }];
    c.shop.api_key = Secret(SHOP_KEY.into());
    c.store.command_timeout_ms = 1_000;
    c
}

/// A new place in `room`: the join is repeated while it answers 503, with the pending ticket
/// the 503 gives (as a client does), until `deadline`. Returns the place's ticket.
async fn join_retrying(app: &TestApp, room: &str, deadline: Instant) -> String {
    let mut pending: Option<String> = None;
    loop {
        let r = app.join(room, None, pending.as_deref()).await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.status.is_success(), "{}", r.body);
            return r.str("ticket").to_string();
        }
        assert!(Instant::now() < deadline, "join still 503: {}", r.body);
        pending = Some(r.str("ticket").to_string()).filter(|t| !t.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shopper's path on `app` in `room`: join, poll until admitted, buy one unit, the shop
/// confirms it, claim a coupon; plus the admin status. Returns the reservation id.
async fn shopper_path(app: &TestApp, room: &str, coupon: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    // A node that just became ready may still meet a 503 (a cluster settling).
    let ticket = join_retrying(app, room, deadline).await;
    let pass = loop {
        let p = app.position(room, &ticket).await;
        if p.str("state") == "admitted" {
            break p.str("pass").to_string();
        }
        assert!(Instant::now() < deadline, "not admitted: {}", p.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sale = format!("s{}", &room[1..]);
    let bought = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale}/purchase")))
                .bearer_auth(&pass)
                .json(&json!({ "quantity": 1, "idempotency_key": ticket })),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let rsv = bought.str("reservation_id").to_string();
    let confirmed = app
        .send(
            app.client
                .post(app.api(&format!("reservations/{rsv}/confirm")))
                .bearer_auth(SHOP_KEY),
        )
        .await;
    assert_eq!(confirmed.str("state"), "confirmed", "{}", confirmed.body);
    if let Some(c) = coupon {
        let claimed = app
            .send(
                app.client
                    .post(app.api(&format!("coupons/{c}/claim")))
                    .bearer_auth(&pass),
            )
            .await;
        assert_eq!(claimed.status, StatusCode::CREATED, "{}", claimed.body);
    }
    let status = app
        .send(
            app.client
                .get(format!("{}/admin/v1/rooms/{room}", app.admin))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    rsv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_client_certificate() {
    let redis = TlsRedis::start_with(ClientAuth::Required).await;
    let (id, tour) = (room_id(), room_id());
    let (hook, got) = receiver().await;
    let mut c = shop_config(Some(redis.url()), std::slice::from_ref(&id), 10);
    with_tour(&mut c, &tour, &hook);
    c.store.tls_ca_file = Some(redis.ca_file().to_path_buf());
    c.store.tls_cert_file = Some(redis.cert_file().to_path_buf());
    c.store.tls_key_file = Some(redis.key_file().to_path_buf());
    assert!(c.validate().is_ok());
    let dir = tempfile::tempdir().expect("dir");
    let (app, _) = spawn_app_from_file(c, dir.path()).await;
    wait_until(
        Duration::from_secs(10),
        "the node is ready over TLS",
        || async { app.admin_get("/readyz").await.status == StatusCode::OK },
    )
    .await;
    app.wait_sales_read().await;
    shopper_path(&app, &id, Some(&format!("c{}", &id[1..]))).await;
    operations_tour(&app, &tour, &got).await;
    // The data really is in the TLS server.
    let q = redis.cli(&["EXISTS", &format!("rg:{{{id}}}:seq")]);
    assert_eq!(q.trim(), "1", "{q}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_certificate_that_does_not_verify_is_refused() {
    let redis = TlsRedis::start().await;
    // The server's certificate is signed by a CA this node does not trust.
    let store = rushgate::store::RedisStore::connect(
        &rushgate::config::RedisTarget::Single { url: redis.url() },
        &rushgate::store::TlsFiles {
            ca: Some(redis.certs().other_ca.clone()),
            ..Default::default()
        },
        1,
        Duration::from_secs(2),
    )
    .expect("pool");
    let err = store
        .wait_connected(Duration::from_secs(5))
        .await
        .expect_err("must not connect");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "{text}");
    // And plain text to a TLS port is not silently accepted either.
    let plain = rushgate::store::RedisStore::connect(
        &rushgate::config::RedisTarget::Single {
            url: format!("redis://127.0.0.1:{}", redis.port),
        },
        &rushgate::store::TlsFiles::default(),
        1,
        Duration::from_secs(1),
    )
    .expect("pool");
    assert!(plain.wait_connected(Duration::from_secs(3)).await.is_err());
    // A node configured so stays unready and says why in /readyz.
    let id = room_id();
    let mut c = config(Some(redis.url()), vec![room(&id)]);
    c.store.tls_ca_file = Some(redis.certs().other_ca.clone());
    let app = spawn_app(c).await;
    wait_until(
        Duration::from_secs(10),
        "/readyz names the certificate",
        || async {
            let ready = app.admin_get("/readyz").await;
            ready.status == StatusCode::SERVICE_UNAVAILABLE
                && ready.str("cause").to_lowercase().contains("certificate")
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_during_a_sale_recovers_without_restart() {
    let mut set = SentinelSet::start().await;
    let (id, tour) = (room_id(), room_id());
    let (hook, got) = receiver().await;
    let mut c = shop_config(None, std::slice::from_ref(&id), 1_000);
    with_tour(&mut c, &tour, &hook);
    c.store.sentinel = Some(SentinelConfig {
        master: set.master_name().to_string(),
        nodes: set.sentinel_addrs(),
        password: None,
        sentinel_password: None,
    });
    // Every success must survive the failover: one replica confirms it first.
    c.store.durable_acks = 1;
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    let dir = tempfile::tempdir().expect("dir");
    let nodes = Arc::new([
        spawn_app_from_file(c.clone(), dir.path()).await.0,
        spawn_app(c).await,
    ]);
    for n in nodes.iter() {
        n.wait_sales_read().await;
    }
    shopper_path(&nodes[0], &id, None).await;
    operations_tour(&nodes[0], &tour, &got).await;

    // 5,000 buyers on two nodes for 1,000 units; the master dies a third of the way through.
    let sale = format!("s{}", &id[1..]);
    let told_created = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let buyers = {
        let acknowledged = acknowledged.clone();
        let (nodes, id, sale, told) = (
            nodes.clone(),
            id.clone(),
            sale.clone(),
            told_created.clone(),
        );
        tokio::spawn(async move {
            stream::iter(0..5_000usize)
                .map(|i| {
                    let (nodes, id, sale, told) =
                        (nodes.clone(), id.clone(), sale.clone(), told.clone());
                    let acknowledged = acknowledged.clone();
                    async move {
                        let node = &nodes[i % 2];
                        let state = &node.app.as_ref().expect("running").state;
                        let now = rushgate::clock::now_ms() / 1000;
                        let pass = state
                            .passes
                            .issue(&id, &format!("b{i:015}"), 1, now, now + 600)
                            .expect("pass");
                        // Retry with the same key through the failover, as a careful client does.
                        for _ in 0..60 {
                            let r = node
                                .client
                                .post(node.api(&format!("sales/{sale}/purchase")))
                                .bearer_auth(&pass)
                                .json(&json!({ "quantity": 1, "idempotency_key": format!("k{i}") }))
                                .send()
                                .await;
                            let Ok(r) = r else {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            };
                            match r.status() {
                                StatusCode::CREATED | StatusCode::OK => {
                                    let body: serde_json::Value =
                                        r.json().await.unwrap_or_default();
                                    let rsv = body["reservation_id"].as_str().unwrap_or("");
                                    acknowledged.lock().expect("lock").push(rsv.to_string());
                                    told.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                                StatusCode::CONFLICT => return,
                                _ => tokio::time::sleep(Duration::from_millis(200)).await,
                            }
                        }
                    }
                })
                .buffer_unordered(50)
                .collect::<Vec<()>>()
                .await
        })
    };
    wait_until(
        Duration::from_secs(20),
        "a third of the buyers are served",
        || {
            let told = told_created.clone();
            async move { told.load(Ordering::Relaxed) >= 333 }
        },
    )
    .await;
    let old = set.kill_master();
    let killed_at = Instant::now();
    let new = set.wait_failover(Duration::from_secs(25)).await;
    assert_ne!(old, new);
    // Both nodes recover on the new master without a restart.
    for n in nodes.iter() {
        wait_until(
            Duration::from_secs(30),
            "the node follows the new master",
            || async { n.admin_get("/readyz").await.status == StatusCode::OK },
        )
        .await;
    }
    eprintln!(
        "sentinel: both nodes ready on the new master {:?} after the kill",
        killed_at.elapsed()
    );
    // The promoted replica has no replica of its own: no write can be confirmed by one now, so
    // an acknowledged write answers 503 (retry later), never a success that a second failover
    // could lose.
    let joined = nodes[1].join(&id, None, None).await;
    assert_eq!(
        joined.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        joined.body
    );
    // The buyers still retrying would only meet 503s now.
    buyers.abort();
    let _ = buyers.await;

    // With durable_acks = 1, every reservation a buyer was told about is on the new master.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 333, "{}", acknowledged.len());
    let master = set.current_master();
    for rsv in &acknowledged {
        let held = set.cli(master, &["HEXISTS", &format!("rg:{{{sale}}}:rsv"), rsv]);
        assert_eq!(
            held.trim(),
            "1",
            "acknowledged reservation {rsv} lost in the failover"
        );
    }
    eprintln!(
        "sentinel: {} acknowledged reservations, all on the new master",
        acknowledged.len()
    );

    // Never oversold: the new master's counters add up and hold at most the stock.
    let store = &nodes[0].app.as_ref().expect("running").state.sale_store;
    let st = store.sale_state(&typed_sale(&sale)).await.expect("state");
    assert_eq!(
        st.available + st.reserved + st.confirmed,
        st.total,
        "{st:?}"
    );
    assert!(st.reserved + st.confirmed <= 1_000, "{st:?}");
    let for_nodes = Arc::try_unwrap(nodes).ok().expect("sole owner");
    for n in for_nodes {
        n.stop().await;
    }
}

/// A room's slot moves to another master while shoppers join and buy (resharding): rushgate
/// follows the ASK and MOVED redirections, a script that meets its keys split between the two
/// masters answers 503 (TRYAGAIN) and its retry, as the 503 says, goes through; every shopper
/// ends with one place, seqs stay unique, and the sale never oversells.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_resharding_during_a_drop_is_followed() {
    // Warnings (the cause of a 500, fred reconnecting) are shown with a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start().await;
    let id = room_id();
    let sale = format!("s{}", &id[1..]);
    // More units than shoppers: every shopper buys one.
    let c = shop_config(Some(cluster.url()), std::slice::from_ref(&id), 1_000);
    let app = spawn_app(c).await;
    wait_until(
        Duration::from_secs(10),
        "the node is ready on the cluster",
        || async { app.admin_get("/readyz").await.status == StatusCode::OK },
    )
    .await;
    app.wait_sales_read().await;
    // Keys to move: a queue, sessions, a sale's stock... of the room (the sale's keys have
    // their own slot and stay).
    shopper_path(&app, &id, None).await;
    let slot = cluster.room_slot(&id);
    let to = cluster.other_master(slot);

    let done = Arc::new(AtomicU64::new(0));
    let shoppers = {
        let (app, id, sale, done) = (&app, &id, &sale, done.clone());
        stream::iter(0..150usize)
            .map(move |i| {
                let done = done.clone();
                async move {
                    let deadline = Instant::now() + Duration::from_secs(40);
                    // Join, retrying a 503 with the ticket it gives.
                    let ticket = join_retrying(app, id, deadline).await;
                    // Polls (an admitted shopper's claim may meet a 503 and is repeated).
                    let pass = loop {
                        let p = app.position(id, &ticket).await;
                        if p.str("state") == "admitted" {
                            break p.str("pass").to_string();
                        }
                        assert!(Instant::now() < deadline, "not admitted: {}", p.body);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    let bought = loop {
                        let r = app
                            .send(
                                app.client
                                    .post(app.api(&format!("sales/{sale}/purchase")))
                                    .bearer_auth(&pass)
                                    .json(&json!({ "quantity": 1, "idempotency_key": format!("r{i}") })),
                            )
                            .await;
                        if r.status != StatusCode::SERVICE_UNAVAILABLE {
                            break r;
                        }
                        assert!(Instant::now() < deadline, "purchase still 503");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                    let rsv = match bought.status {
                        StatusCode::CREATED | StatusCode::OK => {
                            Some(bought.str("reservation_id").to_string())
                        }
                        StatusCode::CONFLICT => None,
                        other => panic!("purchase {other}: {}", bought.body),
                    };
                    (crate::crowd::seq_of(&ticket), rsv, ticket)
                }
            })
            .buffer_unordered(10)
            .collect::<Vec<_>>()
    };
    let reshard = async {
        wait_until(
            Duration::from_secs(20),
            "a third of the shoppers are done",
            || {
                let n = done.load(Ordering::Relaxed);
                async move { n >= 50 }
            },
        )
        .await;
        cluster
            .move_slot(slot, to, Duration::from_millis(100))
            .await
    };
    let (results, moved) = tokio::join!(shoppers, reshard);
    assert!(moved >= 3, "only {moved} keys moved");
    assert_eq!(cluster.master_of_slot(slot), to, "the slot moved");
    // The store never hands one seq to two shoppers. Seq 0 is "admitted, seq not told": a join
    // whose answer was lost (a 503 while the slot moved) is repeated with its pending ticket,
    // finds the shopper already admitted, and the store keeps no seq for a session.
    let numbered: Vec<u64> = results
        .iter()
        .map(|(q, _, _)| *q)
        .filter(|q| *q > 0)
        .collect();
    let seqs: std::collections::HashSet<u64> = numbered.iter().copied().collect();
    if seqs.len() != numbered.len() {
        // Which tickets share a seq, to tell a store fault from a client one.
        let mut by_seq: std::collections::BTreeMap<u64, Vec<&String>> = Default::default();
        for (q, _, t) in &results {
            by_seq.entry(*q).or_default().push(t);
        }
        by_seq.retain(|_, ts| ts.len() > 1);
        panic!("two shoppers share a seq: {by_seq:?}");
    }
    let told: std::collections::HashSet<&String> =
        results.iter().filter_map(|(_, r, _)| r.as_ref()).collect();
    let store = &app.app.as_ref().expect("running").state.sale_store;
    let st = store.sale_state(&typed_sale(&sale)).await.expect("state");
    assert_eq!(
        st.available + st.reserved + st.confirmed,
        st.total,
        "{st:?}"
    );
    // One unit went to the first shopper's path, the rest to the crowd's reservations.
    assert_eq!(st.reserved + st.confirmed, told.len() as u64 + 1, "{st:?}");
    // The room works on its new master.
    let after = app.join(&id, None, None).await;
    assert_eq!(after.status, StatusCode::CREATED, "{}", after.body);
    eprintln!(
        "cluster: slot {slot} ({moved} keys) moved to {to} during the drop; {} shoppers served",
        results.len()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_rooms_on_two_masters_and_a_master_failover() {
    let mut cluster = Cluster::start().await;
    let (a, b) = cluster.rooms_on_different_masters();
    assert_ne!(
        cluster.master_of_slot(cluster.room_slot(&a)),
        cluster.master_of_slot(cluster.room_slot(&b))
    );
    let tour = room_id();
    let (hook, got) = receiver().await;
    let mut c = shop_config(Some(cluster.url()), &[a.clone(), b.clone()], 50);
    with_tour(&mut c, &tour, &hook);
    // Every acknowledged write waits for its master's replica (WAIT on that master).
    c.store.durable_acks = 1;
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    let dir = tempfile::tempdir().expect("dir");
    let (app, _) = spawn_app_from_file(c, dir.path()).await;
    wait_until(
        Duration::from_secs(10),
        "the node is ready on the cluster",
        || async { app.admin_get("/readyz").await.status == StatusCode::OK },
    )
    .await;
    app.wait_sales_read().await;
    shopper_path(&app, &a, Some(&format!("c{}", &a[1..]))).await;
    shopper_path(&app, &b, None).await;
    operations_tour(&app, &tour, &got).await;
    // Each room's keys are there (on its own master: `cli` follows the redirection).
    for room in [&a, &b] {
        let key = format!("rg:{{{room}}}:seq");
        assert_eq!(cluster.cli(&["EXISTS", &key]).trim(), "1");
    }

    // FIFO in each room: ten joins each, admitted in join order.
    let mut joined_a = Vec::new();
    for room in [&a, &b] {
        let mut tickets = Vec::new();
        for _ in 0..10 {
            tickets.push(app.join(room, None, None).await.str("ticket").to_string());
        }
        let seqs: Vec<u64> = tickets
            .iter()
            .map(|t| {
                t.split('.')
                    .nth(2)
                    .and_then(|s| s.parse().ok())
                    .expect("seq")
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        if room == &a {
            joined_a = tickets;
        }
    }

    // The master of room a dies: the node follows the promoted replica without a restart.
    let slot = cluster.room_slot(&a);
    cluster.kill_master_of(slot);
    let killed_at = Instant::now();
    cluster
        .wait_failover_of(slot, Duration::from_secs(25))
        .await;
    // durable_acks = 1: every place room a's joins were answered with is on the promoted
    // replica.
    for ticket in &joined_a {
        let id = crate::crowd::identity_of(ticket);
        let held = ["q", "active"].iter().any(|k| {
            !cluster
                .cli(&["ZSCORE", &format!("rg:{{{a}}}:{k}"), &id])
                .trim()
                .is_empty()
        });
        assert!(held, "acknowledged place {id} lost in the failover");
    }
    // The promoted master has no replica yet: an acknowledged write cannot be confirmed, so
    // it answers 503, never a success a second failover could lose.
    let unconfirmed = app.join(&a, None, None).await;
    assert_eq!(
        unconfirmed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        unconfirmed.body
    );
    // The old master comes back as the new one's replica: writes are confirmed again.
    cluster.restart_killed().await;
    wait_until(Duration::from_secs(30), "room a works again", || async {
        app.join(&a, None, None).await.status == StatusCode::CREATED
    })
    .await;
    eprintln!(
        "cluster: room a joins again {:?} after its master died",
        killed_at.elapsed()
    );
    shopper_path(&app, &a, None).await;
    shopper_path(&app, &b, None).await;
    // Never oversold in either room.
    let store = &app.app.as_ref().expect("running").state.sale_store;
    for room in [&a, &b] {
        let st = store
            .sale_state(&typed_sale(&format!("s{}", &room[1..])))
            .await
            .expect("state");
        assert_eq!(
            st.available + st.reserved + st.confirmed,
            st.total,
            "{st:?}"
        );
        assert!(st.reserved + st.confirmed <= 50);
    }
    app.stop().await;
}
