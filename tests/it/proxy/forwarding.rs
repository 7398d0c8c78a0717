//! Forwarding: headers both ways, cookies, bypass, protected paths with a pass, streaming bodies,
//! oversized headers and an upstream that is down.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;
use reqwest::StatusCode;

use super::upstream::{Upstream, CHUNK};
use super::{addr, proxied_room, raw, shop_behind_rushgate, shopper};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprotected_paths_are_forwarded_with_headers_rewritten() {
    let (up, app, id) = shop_behind_rushgate().await;
    let host = addr(&app);
    let request = format!(
        "GET /about/us?x=1&y=%20 HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Hop\r\n\
         X-Hop: secret\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic abc\r\n\
         Rushgate-Pass: forged\r\nX-Forwarded-For: 203.0.113.7\r\nX-Custom: kept\r\n\
         Cookie: shop=1; rg_ticket_{id}=t; rg_pass_{id}=p; rg_pass_other=q; theme=dark\r\n\r\n"
    );
    let answer = raw(host, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-upstream: yes"), "{answer}");
    assert!(lower.contains("set-cookie: shop_session=abc"), "{answer}");
    assert!(
        !lower.contains("x-hop-resp"),
        "response hop-by-hop header kept: {answer}"
    );
    assert!(!lower.contains("keep-alive: timeout=5"), "{answer}");
    assert!(answer.ends_with("upstream:/about/us?x=1&y=%20"), "{answer}");

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.uri, "/about/us?x=1&y=%20");
    let h = &s.headers;
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "rushgate-pass",
    ] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
    }
    assert_eq!(h["cookie"], "shop=1; theme=dark");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], up.addr.to_string().as_str());
    assert!(!h["x-request-id"].is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_is_never_queued_and_protected_needs_a_pass() {
    let up = Upstream::start().await;
    let id = room_id();
    let mut r = proxied_room(&id, &up.url());
    r.max_active = 1;
    let app = spawn_app(config(None, vec![r])).await;
    // Fill the room so that a new shopper would have to wait.
    let blocker = app.join(&id, None, None).await;
    assert_eq!(blocker.str("state"), "admitted");

    let client = shopper();
    let css = client
        .get(format!("{}/products/drop/site.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["x-upstream"], "yes");
    let health = client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.headers()["x-upstream"], "yes");

    let page = client
        .get(format!("{}/products/drop", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("x-upstream").is_none());
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("aria-live"), "{html}");
    // Dodges of the rule are normalized before matching.
    for dodge in ["/products//drop", "/products/./drop", "/products/%64rop"] {
        let r = client
            .get(format!("{}{dodge}", app.base))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("x-upstream").is_none(), "{dodge} forwarded");
    }
    let paths: Vec<String> = up.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/products/drop/site.css", "/health"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_shopper_is_redirected_then_forwarded_with_the_pass() {
    let (up, app, id) = shop_behind_rushgate().await;
    let state = app.app.as_ref().unwrap().state.clone();
    up.set_verifier(state.passes.clone(), &id);

    let client = shopper();
    let url = format!("{}/products/drop?size=9", app.base);
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()["location"], "/products/drop?size=9");
    let cookies: Vec<String> = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("rg_pass_{id}="))),
        "{cookies:?}"
    );
    assert!(up.seen().is_empty(), "forwarded before the pass");

    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-upstream"], "yes");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].pass_sub.is_some(), "pass missing or invalid");
    assert!(
        seen[0].headers.get("cookie").is_none(),
        "rushgate cookies forwarded"
    );
    assert_eq!(up.bad_passes(), 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("rushgate_proxy_upstream_duration_seconds_count")
                && l.contains("status=\"200\"")
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_buffering() {
    let (up, app, _) = shop_behind_rushgate().await;
    let client = shopper();

    // Upload: the rest of the body is only produced after the upstream has the first chunk, so a
    // proxy that collected the body before forwarding would deadlock (and time out).
    const TOTAL: usize = 32 * 1024 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let shared = up.shared.clone();
    let producer = tokio::spawn(async move {
        for i in 0..TOTAL / CHUNK {
            if i == 1 {
                shared.upload_started.notified().await;
            }
            if tx
                .send(bytes::Bytes::from(vec![b'u'; CHUNK]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        client
            .post(format!("{}/upload", app.base))
            .body(reqwest::Body::wrap(ChannelBody(rx)))
            .send(),
    )
    .await
    .expect("upload streams")
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), format!("received {TOTAL}"));

    // Download: the upstream holds everything after the first chunk until the client has it.
    let resp = client
        .get(format!("{}/download?n={TOTAL}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let mut received = 0usize;
    let mut released = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("download streams")
        .unwrap()
    {
        received += chunk.len();
        if !released && received > 0 {
            released = true;
            up.shared.download_release.notify_one();
        }
    }
    assert_eq!(received, TOTAL);
    producer.await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_get_431() {
    let (up, app, _) = shop_behind_rushgate().await;
    let big = "v".repeat(40 * 1024);
    let answer = raw(
        addr(&app),
        &format!("GET /about HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(answer.contains("application/problem+json"));
    assert!(answer.contains("headers-too-large"));
    assert!(up.seen().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_problem_with_a_request_id() {
    // A port nobody listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = room_id();
    let app = spawn_app(config(
        None,
        vec![proxied_room(&id, &format!("http://127.0.0.1:{port}"))],
    ))
    .await;
    let started = std::time::Instant::now();
    let r = app
        .send(app.client.get(format!("{}/about", app.base)))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "502 took too long"
    );
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert!(
        r.str("type").ends_with("/upstream-unavailable"),
        "{}",
        r.body
    );
    let rid = r.headers["x-request-id"].to_str().unwrap();
    assert!(!rid.is_empty());
    assert_eq!(r.str("request_id"), rid, "{}", r.body);

    // A browser gets the same failure as a page it can read, with the id to quote.
    let page = app
        .client
        .get(format!("{}/about", app.base))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        page.headers()["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let rid = page.headers()["x-request-id"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("Request id: {rid}")), "{html}");
    assert!(html.starts_with("<!doctype html>"), "{html}");

    // Operators see it in the metrics.
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rushgate_proxy_upstream_errors_total")
                && l.contains("kind=\"connect\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    app.stop().await;
}

/// A request body fed from a channel: chunks go out as they are produced.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// The pass is checked locally: 500 proxied requests with a pass cost Redis nothing beyond the
/// node's own background refreshes (a per-request store call would show as 500+ commands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_requests_with_a_pass_make_no_store_call() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let id = room_id();
    let app = spawn_app(config(
        Some(redis.url()),
        vec![proxied_room(&id, &up.url())],
    ))
    .await;
    let client = shopper();
    let url = format!("{}/products/drop", app.base);
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Every store operation of rushgate is one EVALSHA (or a PING): count those round trips.
    let evalsha = || -> u64 {
        redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = evalsha();
    let started = std::time::Instant::now();
    for _ in 0..500 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    let used = evalsha() - before;
    // Background: the pacer's one tick per 50 ms refresh (plus a liveness flush now and then).
    let background = (elapsed.as_millis() as u64 / 50 + 2) * 2;
    assert!(
        used <= background,
        "{used} store round trips for 500 proxied requests in {elapsed:?} (background allowance {background})"
    );
    assert_eq!(up.seen().len(), 501);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_connections_are_reused_and_replaced_when_the_shop_closes_them() {
    let (up, app, _) = shop_behind_rushgate().await;
    let client = shopper();
    let get = |path: &str| client.get(format!("{}{path}", app.base)).send();

    // One at a time: every request reuses the one connection, also after empty answers
    // (a 204 and a HEAD have no body to read to the end).
    for i in 0..30 {
        let path = match i % 3 {
            0 => "/empty",
            _ => "/about",
        };
        let r = get(path).await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.unwrap();
        let r = client
            .head(format!("{}/about", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(up.connections(), 1, "kept-alive connection not reused");

    // The shop closes the connection after answering: the next request gets a new one.
    let r = get("/close").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "closing");
    let r = get("/about").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "after a closing answer");
    assert_eq!(up.connections(), 2);

    // The shop drops its idle connections (its keep-alive timeout) just before requests
    // arrive: none fails, whether the close is seen before the request is handed over or not.
    for round in 0..20 {
        let burst: Vec<_> = (0..8).map(|_| get("/about")).collect();
        for r in futures::future::join_all(burst).await {
            assert_eq!(r.unwrap().status(), StatusCode::OK, "round {round}");
        }
        up.shared.close_all.notify_waiters();
    }
    let r = get("/about").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_shop_drops_is_resent_once_and_only_when_idempotent() {
    let (up, app, _) = shop_behind_rushgate().await;
    let client = shopper();
    let hangups = || up.shared.hangups.load(std::sync::atomic::Ordering::SeqCst);
    let warm = || async {
        // A kept-alive connection, so the failure below happens on a reused one.
        let r = client
            .get(format!("{}/about", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap();
    };

    warm().await;
    let r = client
        .get(format!("{}/hangup", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        hangups(),
        2,
        "a GET is sent once more, on a new connection, and no more"
    );

    warm().await;
    let r = client
        .post(format!("{}/hangup", app.base))
        .body("order=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        hangups(),
        3,
        "a POST that reached the shop is never sent twice"
    );

    warm().await;
    app.stop().await;
}

/// A shop's streamed answer that pauses longer than the listener's idle timeout is not cut:
/// the request is still being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_pausing_past_the_idle_timeout_is_not_cut() {
    let up = Upstream::start().await;
    let id = room_id();
    let mut c = config(None, vec![proxied_room(&id, &up.url())]);
    c.server.idle_timeout_seconds = 1;
    let app = spawn_app(c).await;
    let mut resp = reqwest::Client::new()
        .get(format!("{}/download?n={}", app.base, CHUNK * 3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("first chunk");
    assert!(!first.is_empty());
    // The shop pauses for more than twice the idle timeout; the deadline is the point here.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    up.shared.download_release.notify_one();
    let mut total = first.len();
    while let Some(chunk) = resp.chunk().await.expect("the answer continues") {
        total += chunk.len();
    }
    assert_eq!(total, CHUNK * 3);
    app.stop().await;
}
