//! Sessions that end everywhere: after `leave` with an admitted ticket, the admin end call, or
//! the shop's `Rushgate-Session: end` response header, the pass is refused by the gate, the
//! proxy and purchase on both nodes within one second, the waiter behind takes the slot, and
//! passes that still work never number more than `max_active`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rushgate::config::{SaleConfig, Secret};
use serde_json::json;

use super::proxied_room;
use super::upstream::Upstream;
use crate::harness::*;

const SHOP_KEY: &str = "test-shop-key-0123456789";

/// Polls `ticket` on `node` until it is admitted; returns its pass.
async fn admitted_pass(node: &TestApp, room: &str, ticket: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = node.position(room, ticket).await;
        if r.str("state") == "admitted" {
            return r.str("pass").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not admitted in time: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What each check says about `pass` on `node`: (gate lets it in, proxy forwards it to the
/// shop, purchase accepts it as a pass).
async fn pass_works(node: &TestApp, room: &str, sale: &str, pass: &str) -> (bool, bool, bool) {
    let gate = node
        .client
        .get(node.api(&format!("rooms/{room}/gate")))
        .bearer_auth(pass)
        .send()
        .await
        .expect("gate")
        .status()
        == StatusCode::NO_CONTENT;
    let proxied = reqwest::Client::new()
        .get(format!("{}/products/item", node.base))
        .header("cookie", format!("rg_pass_{room}={pass}"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("proxy");
    let forwarded = proxied.status() == StatusCode::OK
        && proxied
            .text()
            .await
            .unwrap_or_default()
            .starts_with("upstream:");
    // A zero quantity is refused after the pass check: 400 means the pass was accepted.
    let bought = node
        .send(
            node.client
                .post(node.api(&format!("sales/{sale}/purchase")))
                .bearer_auth(pass)
                .json(&json!({ "quantity": 0 })),
        )
        .await;
    let purchase = bought.status == StatusCode::BAD_REQUEST;
    (gate, forwarded, purchase)
}

/// Waits until `pass` is refused everywhere; returns how long that took.
async fn refused_everywhere(nodes: &[&TestApp], room: &str, sale: &str, pass: &str) -> Duration {
    let since = Instant::now();
    wait_until(
        Duration::from_secs(1),
        "the pass is refused on every node",
        || async {
            for node in nodes {
                if pass_works(node, room, sale, pass).await != (false, false, false) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    since.elapsed()
}

/// Passes of `passes` that still work at the gate of `node`.
async fn working(node: &TestApp, room: &str, passes: &[String]) -> usize {
    let mut n = 0;
    for pass in passes {
        let ok = node
            .client
            .get(node.api(&format!("rooms/{room}/gate")))
            .bearer_auth(pass)
            .send()
            .await
            .expect("gate")
            .status()
            == StatusCode::NO_CONTENT;
        n += usize::from(ok);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_are_refused_everywhere_and_free_their_slot() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let id = room_id();
    let sale = format!("s{}", &id[1..]);
    let mut r = proxied_room(&id, &up.url());
    r.max_active = 2;
    let mut cfg = config(Some(redis.url()), vec![r]);
    cfg.sales = vec![SaleConfig::with_ids(&sale, &id, 100)];
    cfg.shop.api_key = Secret(SHOP_KEY.into());
    let a = spawn_app(cfg.clone()).await;
    let b = spawn_app(cfg).await;
    a.wait_sales_read().await;
    b.wait_sales_read().await;
    let nodes = [&a, &b];

    // Two holders fill the room; three wait behind them.
    let mut tickets = Vec::new();
    for i in 0..5 {
        let node = nodes[i % 2];
        let joined = node.join(&id, None, None).await;
        assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
        tickets.push(joined.str("ticket").to_string());
    }
    let mut passes = vec![
        admitted_pass(&a, &id, &tickets[0]).await,
        admitted_pass(&b, &id, &tickets[1]).await,
    ];
    for p in &passes {
        assert_eq!(pass_works(&a, &id, &sale, p).await, (true, true, true));
        assert_eq!(pass_works(&b, &id, &sale, p).await, (true, true, true));
    }
    a.settle(&id).await;
    assert_eq!(a.position(&id, &tickets[2]).await.str("state"), "waiting");

    // 1. The holder leaves with its ticket (on node A).
    let left = a.leave(&id, &tickets[0]).await;
    assert_eq!(left.str("gave_up"), "admitted", "{}", left.body);
    let took = refused_everywhere(&nodes, &id, &sale, &passes[0]).await;
    eprintln!("leave: refused everywhere after {took:?}");
    passes.push(admitted_pass(&b, &id, &tickets[2]).await);
    assert!(working(&a, &id, &passes).await <= 2);

    // 2. The operator ends the second holder's session through node B's admin API.
    let sub = {
        let part = passes[1].split('.').nth(1).expect("payload");
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part)
                .expect("b64"),
        )
        .expect("claims");
        claims["sub"].as_str().expect("sub").to_string()
    };
    let ended = reply(
        b.client
            .post(format!(
                "{}/admin/v1/rooms/{id}/sessions/{sub}/end",
                b.admin
            ))
            .send()
            .await
            .expect("admin end"),
    )
    .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.str("ended"), "admitted", "{}", ended.body);
    let took = refused_everywhere(&nodes, &id, &sale, &passes[1]).await;
    eprintln!("admin end: refused everywhere after {took:?}");
    passes.push(admitted_pass(&a, &id, &tickets[3]).await);
    assert!(working(&b, &id, &passes).await <= 2);
    // A malformed sub is a clear 400 that changes nothing.
    let bad = reply(
        b.client
            .post(format!(
                "{}/admin/v1/rooms/{id}/sessions/not-a-sub!/end",
                b.admin
            ))
            .send()
            .await
            .expect("admin end"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    // 3. The shop ends the third session with `Rushgate-Session: end` on a proxied answer.
    let logout = reqwest::Client::new()
        .get(format!("{}/products/logout", a.base))
        .header("cookie", format!("rg_pass_{id}={}", passes[2]))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::OK);
    assert!(
        logout.headers().get("rushgate-session").is_none(),
        "the header is stripped"
    );
    assert!(logout.headers().get_all("set-cookie").iter().any(|c| c
        .to_str()
        .unwrap_or("")
        .starts_with(&format!("rg_pass_{id}=;"))));
    let took = refused_everywhere(&nodes, &id, &sale, &passes[2]).await;
    eprintln!("origin end: refused everywhere after {took:?}");
    passes.push(admitted_pass(&b, &id, &tickets[4]).await);

    // Never more than max_active passes that still work, on either node.
    for node in nodes {
        assert_eq!(working(node, &id, &passes).await, 2);
    }
    // The ended holders' tickets say so.
    for t in &tickets[..3] {
        let r = a.position(&id, t).await;
        assert_eq!(r.str("state"), "expired", "{}", r.body);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_ends_a_session_from_an_unprotected_page() {
    let up = Upstream::start().await;
    let id = room_id();
    let mut r = proxied_room(&id, &up.url());
    r.max_active = 1;
    let app = spawn_app(config(None, vec![r])).await;
    let holder = app.join(&id, None, None).await;
    let waiter = app.join(&id, None, None).await;
    let pass = admitted_pass(&app, &id, holder.str("ticket")).await;

    // Without a pass the header only disappears.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/logout", app.base))
        .send()
        .await
        .expect("logout");
    assert_eq!(anonymous.status(), StatusCode::OK);
    assert!(anonymous.headers().get("rushgate-session").is_none());
    assert_eq!(
        app.position(&id, holder.str("ticket")).await.str("state"),
        "admitted"
    );

    // With the pass cookie, /logout (not protected) ends the session: slot freed, pass revoked.
    let logout = reqwest::Client::new()
        .get(format!("{}/logout", app.base))
        .header("cookie", format!("rg_pass_{id}={pass}"))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::OK);
    assert!(logout.headers().get("rushgate-session").is_none());
    wait_until(Duration::from_secs(2), "the pass is revoked", || async {
        app.client
            .get(app.api(&format!("rooms/{id}/gate")))
            .bearer_auth(&pass)
            .send()
            .await
            .expect("gate")
            .status()
            == StatusCode::UNAUTHORIZED
    })
    .await;
    admitted_pass(&app, &id, waiter.str("ticket")).await;
    app.stop().await;
}
