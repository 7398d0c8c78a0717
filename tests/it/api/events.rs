//! Server-sent events of a place: a waiter's stream shows its place, then its admission with
//! the pass, without a single poll; a stream that only listens keeps the place alive past the
//! room's idle timeout; streams are counted, bounded, and end when their room is replaced; an
//! operator's live message reaches every node's streams within a refresh, in each reader's
//! language.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rushgate::config::Secret;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::*;

/// An open event stream, read event by event.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &TestApp, room: &str, ticket: &str) -> Events {
        Self::open_in(app, room, ticket, None).await
    }

    /// A stream whose client reads `lang` (`Accept-Language`).
    async fn open_in(app: &TestApp, room: &str, ticket: &str, lang: Option<&str>) -> Events {
        let mut req = app
            .client
            .get(app.api(&format!("rooms/{room}/events")))
            .bearer_auth(ticket);
        if let Some(lang) = lang {
            req = req.header("accept-language", lang);
        }
        let resp = req
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("events");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next `place` event's id and body (comments skipped); `None` when the stream ended.
    async fn next(&mut self, within: Duration) -> Option<(u64, Value)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data) = (0, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().expect("numeric id");
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("JSON data"));
                    }
                }
                if let Some(data) = data {
                    return Some((id, data));
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no event within {within:?}");
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no event within {within:?}"),
            }
        }
    }
}

both_stores!(a_listening_waiter_is_told_its_admission_without_polling);
async fn a_listening_waiter_is_told_its_admission_without_polling(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    // Shorter than the wait below: only the open stream keeps the waiter's place.
    r.idle_timeout_seconds = 2;
    let app = spawn_app(config(url, vec![r])).await;
    let blocker = app.join(&id, None, None).await;
    assert_eq!(blocker.str("state"), "admitted", "{}", blocker.body);
    let waiter = app.join(&id, None, None).await;
    assert_eq!(waiter.str("state"), "waiting", "{}", waiter.body);
    let mut events = Events::open(&app, &id, waiter.str("ticket")).await;
    let (first_id, first) = events
        .next(Duration::from_secs(5))
        .await
        .expect("first event");
    assert_eq!(first["state"], "waiting", "{first}");
    assert_eq!(first["position"], 1, "{first}");
    // Twice the idle timeout with no poll (the passing time is the point): the stream alone
    // keeps the place.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The blocker leaves: the waiter's stream says admitted, with the pass, and ends.
    let left = app.leave(&id, blocker.str("ticket")).await;
    assert!(left.status.is_success(), "{}", left.body);
    let admitted = loop {
        let (event_id, e) = events
            .next(Duration::from_secs(10))
            .await
            .expect("an event");
        assert!(event_id > first_id);
        if e["state"] == "admitted" {
            break e;
        }
        assert_eq!(e["state"], "waiting", "the place was kept: {e}");
    };
    assert!(
        !admitted["pass"].as_str().unwrap_or("").is_empty(),
        "{admitted}"
    );
    assert!(
        events.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_ticket_are_bounded_and_counted() {
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut c = config(None, vec![r]);
    c.server.max_event_streams = 2;
    let app = spawn_app(c).await;
    let none = app
        .send(app.client.get(app.api(&format!("rooms/{id}/events"))))
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let _blocker = app.join(&id, None, None).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let w = app.join(&id, None, None).await;
        open.push(Events::open(&app, &id, w.str("ticket")).await);
    }
    let w = app.join(&id, None, None).await;
    let full = app
        .send(
            app.client
                .get(app.api(&format!("rooms/{id}/events")))
                .bearer_auth(w.str("ticket")),
        )
        .await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.body
    );
    assert!(full.headers.contains_key("retry-after"));
    let gauge = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("rushgate_event_streams_open "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert!(gauge(&app.metrics_text().await) >= 2.0);
    drop(open);
    wait_until(
        Duration::from_secs(10),
        "a stream slot is free again",
        || async {
            app.client
                .get(app.api(&format!("rooms/{id}/events")))
                .bearer_auth(w.str("ticket"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_stream() {
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut c = config(None, vec![r]);
    c.server.max_event_streams_per_client = 1;
    let app = spawn_app(c).await;
    let _blocker = app.join(&id, None, None).await;
    let (a, b) = (
        app.join(&id, None, None).await,
        app.join(&id, None, None).await,
    );
    let first = Events::open(&app, &id, a.str("ticket")).await;
    let second = app
        .send(
            app.client
                .get(app.api(&format!("rooms/{id}/events")))
                .bearer_auth(b.str("ticket")),
        )
        .await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.body
    );
    assert_eq!(
        second.str("type"),
        "https://rushgate.dev/problems/streams-per-client"
    );
    drop(first);
    wait_until(
        Duration::from_secs(10),
        "the address may open one again",
        || async {
            app.client
                .get(app.api(&format!("rooms/{id}/events")))
                .bearer_auth(b.str("ticket"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    app.stop().await;
}

const TOKEN: &str = "admin-token-0123456789abcdef";

/// `POST /admin/v1/rooms/{room}/message` on `app`.
async fn set_message(app: &TestApp, room: &str, body: Value, token: Option<&str>) -> Reply {
    let mut req = app
        .client
        .post(format!("{}/admin/v1/rooms/{room}/message", app.admin))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    app.send(req).await
}

/// Reads `events` until a place event whose message is `want`; the time it took.
async fn until_message(events: &mut Events, want: &str, since: Instant) -> Duration {
    loop {
        let (_, e) = events
            .next(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the stream ended before {want:?}"));
        if e["message"].as_str().unwrap_or("") == want {
            return since.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_message_reaches_every_node_and_stream_in_its_language() {
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    r.message = "Doors at noon".into();
    r.messages = [("ko".to_string(), "정오에 엽니다".to_string())].into();
    r.languages = vec!["en".into(), "ko".into(), "ja".into()];
    let mut c = config(Some(redis.url()), vec![r]);
    c.admin.token = Secret(TOKEN.into());
    let a = spawn_app(c.clone()).await;
    let b = spawn_app(c).await;
    let blocker = a.join(&id, None, None).await;
    assert_eq!(blocker.str("state"), "admitted", "{}", blocker.body);
    let (w1, w2) = (b.join(&id, None, None).await, a.join(&id, None, None).await);
    assert_eq!(w1.str("state"), "waiting", "{}", w1.body);
    let mut korean = Events::open_in(&b, &id, w1.str("ticket"), Some("ko-KR,ko;q=0.9")).await;
    let mut english = Events::open_in(&a, &id, w2.str("ticket"), Some("en-US")).await;
    let (_, first) = korean.next(Duration::from_secs(5)).await.expect("event");
    assert_eq!(first["message"], "정오에 엽니다", "{first}");
    let (_, first) = english.next(Duration::from_secs(5)).await.expect("event");
    assert_eq!(first["message"], "Doors at noon", "{first}");

    // Refused changes name the problem and change nothing.
    for (body, field) in [
        (
            json!({"message": "x", "messages": {"de": "y"}}),
            "messages.de",
        ),
        (json!({"message": "x".repeat(1_001)}), "message"),
        (json!({"message": "bell\u{7}"}), "message"),
    ] {
        let r = set_message(&a, &id, body, Some(TOKEN)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.str("type"), "https://rushgate.dev/problems/invalid-field");
        assert!(r.str("detail").contains(field), "{}", r.body);
    }
    let r = set_message(&a, &id, json!({"text": "x"}), Some(TOKEN)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = set_message(&a, &id, json!({"message": "x"}), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // Set on node A: both nodes' streams get it within a refresh, each in its language.
    let sent = Instant::now();
    let r = set_message(
        &a,
        &id,
        json!({"message": "Restock at 12:05", "messages": {"ko": "12시 5분에 재입고"}}),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.u64("version"), 1, "{}", r.body);
    let to_korean = until_message(&mut korean, "12시 5분에 재입고", sent).await;
    let to_english = until_message(&mut english, "Restock at 12:05", sent).await;
    eprintln!("live message: node B's stream after {to_korean:?}, node A's after {to_english:?} (refresh 50 ms)");
    assert!(to_korean < Duration::from_secs(1) && to_english < Duration::from_secs(1));
    // A poll in a language without a translation gets the general text; one the room does not
    // offer gets the default language's.
    for (lang, want) in [
        ("ja", "Restock at 12:05"),
        ("fr", "Restock at 12:05"),
        ("ko", "12시 5분에 재입고"),
    ] {
        let p = b
            .send(
                b.client
                    .get(b.api(&format!("rooms/{id}/position")))
                    .bearer_auth(w1.str("ticket"))
                    .header("accept-language", lang),
            )
            .await;
        assert_eq!(p.str("message"), want, "{lang}: {}", p.body);
    }
    let status = b.send(b.client.get(b.api(&format!("rooms/{id}")))).await;
    assert_eq!(status.str("message"), "Restock at 12:05", "{}", status.body);
    assert_eq!(status.body["live_message"], true, "{}", status.body);

    // `rushgate ctl rooms message ROOM ""` gives the configured message back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
        .args(["ctl", "--admin", &b.admin, "--token", TOKEN])
        .args(["rooms", "message", &id, ""])
        .env_remove("RUSHGATE_ADMIN_TOKEN")
        .output()
        .expect("run rushgate ctl");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"cleared\": true"),
        "{out:?}"
    );
    let cleared = Instant::now();
    until_message(&mut korean, "정오에 엽니다", cleared).await;
    until_message(&mut english, "Doors at noon", cleared).await;
    // And sets one with a translation.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
        .args(["ctl", "--admin", &a.admin, "--token", TOKEN])
        .args([
            "rooms",
            "message",
            &id,
            "Sold out soon",
            "--lang",
            "ko=곧 품절",
        ])
        .env_remove("RUSHGATE_ADMIN_TOKEN")
        .output()
        .expect("run rushgate ctl");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    until_message(&mut korean, "곧 품절", Instant::now()).await;
    until_message(&mut english, "Sold out soon", Instant::now()).await;
    a.stop().await;
    b.stop().await;
}
