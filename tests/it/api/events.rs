//! Server-sent events of a place: a waiter's stream shows its place, then its admission with
//! the pass, without a single poll; a stream that only listens keeps the place alive past the
//! room's idle timeout; streams are counted, bounded, and end when their room is replaced.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_stores;
use crate::harness::*;

/// An open event stream, read event by event.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &TestApp, room: &str, ticket: &str) -> Events {
        let resp = app
            .client
            .get(app.api(&format!("rooms/{room}/events")))
            .bearer_auth(ticket)
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
