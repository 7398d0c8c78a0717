//! WebSockets through the proxy: a protected path upgrades only with a pass (401 without one),
//! an unprotected path upgrades freely, 100 concurrent sockets each echo 1,000 messages through
//! rushgate, open tunnels are counted, and an upstream at its tunnel cap answers 503 without the
//! shop seeing the request.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::upstream::Upstream;
use super::{addr, proxied_room};
use crate::harness::{self, wait_until, TestApp};

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket to `path` on `app`, with `cookie` when given.
async fn open(app: &TestApp, path: &str, cookie: Option<&str>) -> Result<Socket, WsError> {
    let a = addr(app);
    let mut req = format!("ws://{a}{path}").into_client_request()?;
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", c.parse().expect("cookie"));
    }
    let stream = tokio::net::TcpStream::connect(a).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}

/// A pass of `room`, as admission hands it out (the test rooms admit at once).
async fn pass_cookie(app: &TestApp, room: &str) -> String {
    let joined = app.join(room, None, None).await;
    let ticket = joined.str("ticket").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = app.position(room, &ticket).await;
        if !p.str("pass").is_empty() {
            return format!("rg_pass_{room}={}", p.str("pass"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not admitted: {}",
            p.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gauge(metrics: &str, name: &str, upstream: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("upstream=\"{upstream}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_need_a_pass_on_protected_paths_and_echo_through_rushgate() {
    let up = Upstream::start().await;
    let room = harness::room_id();
    let app = harness::spawn_app(harness::config(None, vec![proxied_room(&room, &up.url())])).await;
    let label = up.addr.to_string();
    up.set_verifier(app.app.as_ref().unwrap().state.passes.clone(), &room);

    // No pass: the upgrade is refused with 401 and never reaches the shop.
    match open(&app, "/products/ws", None).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), StatusCode::UNAUTHORIZED),
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("a protected WebSocket opened without a pass"),
    }
    assert!(up.seen().is_empty(), "the shop saw the refused upgrade");
    // A forged pass is no pass.
    let forged = format!("rg_pass_{room}=eyJhbGciOiJFZERTQSJ9.e30.x");
    assert!(matches!(
        open(&app, "/products/ws", Some(&forged)).await,
        Err(WsError::Http(r)) if r.status() == StatusCode::UNAUTHORIZED
    ));

    // An unprotected path upgrades freely.
    let mut free = open(&app, "/ws", None).await.expect("unprotected upgrade");
    free.send(Message::text("hello")).await.unwrap();
    assert_eq!(free.next().await.unwrap().unwrap(), Message::text("hello"));
    free.close(None).await.unwrap();
    drop(free);

    // With a pass: 100 sockets at once, 1,000 messages each, every echo in order.
    let cookie = pass_cookie(&app, &room).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(
            open(&app, "/products/ws", Some(&cookie))
                .await
                .expect("upgrade with a pass"),
        );
    }
    // The unprotected one closes; the 100 stay open, each counted once.
    wait_until(
        Duration::from_secs(10),
        "100 tunnels counted open",
        || async {
            gauge(
                &app.metrics_text().await,
                "rushgate_proxy_tunnels_open",
                &label,
            ) == 100.0
        },
    )
    .await;
    let started = std::time::Instant::now();
    let runs: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let writer = tokio::spawn(async move {
                    for n in 0..1_000 {
                        tx.send(Message::text(format!("{i}:{n}"))).await.unwrap();
                    }
                    tx
                });
                for n in 0..1_000 {
                    let got = rx.next().await.expect("an echo").expect("a message");
                    assert_eq!(got, Message::text(format!("{i}:{n}")));
                }
                let mut tx = writer.await.unwrap();
                tx.close().await.unwrap();
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "100 WebSockets x 1,000 echoes through rushgate in {took:?} ({:.0} messages/s round trip)",
        100_000.0 / took.as_secs_f64()
    );
    assert_eq!(up.bad_passes(), 0);
    let ws_requests: Vec<_> = up
        .seen()
        .into_iter()
        .filter(|s| s.uri.ends_with("/ws"))
        .collect();
    assert_eq!(ws_requests.len(), 101);
    assert!(ws_requests
        .iter()
        .filter(|s| s.uri == "/products/ws")
        .all(|s| s.pass_sub.is_some()));
    wait_until(
        Duration::from_secs(10),
        "every tunnel is closed",
        || async {
            gauge(
                &app.metrics_text().await,
                "rushgate_proxy_tunnels_open",
                &label,
            ) == 0.0
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_refused_and_a_quiet_tunnel_is_closed() {
    let up = Upstream::start().await;
    let room = harness::room_id();
    let mut r = proxied_room(&room, &up.url());
    r.tunnel_idle_seconds = 1;
    let app = harness::spawn_app(harness::config(None, vec![r])).await;
    // An h2c upgrade would give the client an HTTP/2 connection to the shop past every rule.
    let answer = super::raw(
        addr(&app),
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upgrade-refused"), "{answer}");
    assert!(up.seen().is_empty(), "the shop never saw it");
    // A tunnel nobody talks on is closed after its idle time; the client sees the end.
    let mut ws = open(&app, "/ws", None).await.expect("upgrade");
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(end, Ok(None) | Ok(Some(Err(_)))),
        "the quiet tunnel was closed: {end:?}"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed after {after:?} (idle 1 s)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_at_its_tunnel_cap_gets_no_more() {
    let up = Upstream::start().await;
    let room = harness::room_id();
    let mut r = proxied_room(&room, &up.url());
    r.max_tunnels = 2;
    let app = harness::spawn_app(harness::config(None, vec![r])).await;
    let first = open(&app, "/ws", None).await.expect("first");
    let _second = open(&app, "/ws", None).await.expect("second");
    match open(&app, "/ws", None).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503 at the cap, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        up.seen().len(),
        2,
        "the refused upgrade never reached the shop"
    );
    // A closed tunnel frees its place.
    drop(first);
    wait_until(
        Duration::from_secs(10),
        "a tunnel is free again",
        || async { open(&app, "/ws", None).await.is_ok() },
    )
    .await;
    app.stop().await;
}
