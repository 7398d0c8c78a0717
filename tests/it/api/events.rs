//! Server-sent events of a place: a waiter's stream shows its place, then its admission with
//! the pass, without a single poll; a stream that only listens keeps the place alive past the
//! room's idle timeout and is admitted in one FIFO order with polling waiters; streams are counted, bounded, and end when their room is replaced; an
//! operator's live message reaches every node's streams within a refresh, in each reader's
//! language.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use rushgate::config::Secret;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::*;

/// One server-sent event.
#[derive(Debug)]
struct Event {
    id: String,
    name: String,
    data: Value,
}

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

    /// The next `place` event's version (the id's first part) and body (other events and
    /// comments skipped); `None` when the stream ended.
    async fn next(&mut self, within: Duration) -> Option<(u64, Value)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next_event(left).await?;
            if e.name == "place" {
                let version = e.id.split('.').next().and_then(|v| v.parse().ok());
                return Some((version.expect("numeric id"), e.data));
            }
        }
    }

    /// The next event of any name (comments skipped); `None` when the stream ended.
    async fn next_event(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (String::new(), "message".to_string(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_string();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("JSON data"));
                    }
                }
                if let Some(data) = data {
                    return Some(Event { id, name, data });
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

both_stores!(listeners_and_pollers_are_admitted_in_one_fifo_order);
/// Waiters that only listen and waiters that only poll, alternating in the line, past the idle
/// timeout: every one keeps its place, and they are admitted one at a time in join order.
async fn listeners_and_pollers_are_admitted_in_one_fifo_order(kind: StoreKind) {
    const WAITERS: usize = 6;
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    r.idle_timeout_seconds = 2;
    let app = spawn_app(config(url, vec![r])).await;
    let blocker = app.join(&id, None, None).await;
    assert_eq!(blocker.str("state"), "admitted", "{}", blocker.body);
    let mut tickets = Vec::new();
    for _ in 0..WAITERS {
        let w = app.join(&id, None, None).await;
        assert_eq!(w.str("state"), "waiting", "{}", w.body);
        tickets.push(w.str("ticket").to_string());
    }
    // Even places listen (their streams report every state they are told), odd places poll.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for (i, ticket) in tickets.iter().enumerate().step_by(2) {
        let mut events = Events::open(&app, &id, ticket).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some((_, e)) = events.next(Duration::from_secs(120)).await {
                let state = e["state"].as_str().unwrap_or_default().to_string();
                if tx.send((i, state)).is_err() {
                    return;
                }
            }
        });
    }
    // What every waiter sees now: the pollers' answers and what the streams told meanwhile.
    let look = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, String)>| {
        let mut seen: Vec<(usize, String)> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let app = &app;
        let tickets = &tickets;
        let id = &id;
        async move {
            for (i, t) in tickets.iter().enumerate().skip(1).step_by(2) {
                let p = app.position(id, t).await;
                assert!(p.status.is_success(), "{}", p.body);
                seen.push((i, p.str("state").to_string()));
            }
            seen
        }
    };
    // Twice the idle timeout (the passing time is the point), pollers at a poller's cadence:
    // nobody loses a place.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for (i, state) in look(&mut rx).await {
            assert_eq!(state, "waiting", "waiter {i}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One session at a time: whoever holds it leaves, and the next in join order (listener or
    // poller alike) is the one admitted.
    let mut holder = blocker.str("ticket").to_string();
    for (k, next) in tickets.iter().enumerate() {
        let left = app.leave(&id, &holder).await;
        assert!(left.status.is_success(), "{}", left.body);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let admitted: Vec<usize> = look(&mut rx)
                .await
                .into_iter()
                .filter(|(i, s)| *i >= k && s == "admitted")
                .map(|(i, _)| i)
                .collect();
            if !admitted.is_empty() {
                assert!(
                    admitted.iter().all(|&i| i == k),
                    "waiter {k} was next in line; admitted: {admitted:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "waiter {k} was not admitted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        holder = next.clone();
    }
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

/// Adds (or, negative, removes unsold) units of `sale` through `node`'s admin API.
async fn stock(node: &TestApp, sale: &str, units: i64) {
    let req = node
        .client
        .post(format!("{}/admin/v1/sales/{sale}/stock", node.admin))
        .bearer_auth(TOKEN)
        .json(&json!({ "units": units }));
    let r = node.send(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// What one waiter's stream showed around a restock: the restock numbers of its `restocked`
/// events (within a quiet second after the first place back in line), and that place's state
/// (`None`: the stream ended first).
async fn through_restock(ev: &mut Events) -> (Vec<u64>, Option<String>) {
    let mut told = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ev.next_event(Duration::from_secs(3600))).await {
            Ok(Some(e)) if e.name == "restocked" => {
                told.push(e.data["restock"].as_u64().unwrap_or(0))
            }
            Ok(Some(e)) if e.name == "place" && e.data["state"] != "sold_out" => {
                break e.data["state"].as_str().map(str::to_string);
            }
            Ok(Some(_)) => {}
            Ok(None) => return (told, None),
            Err(_) => panic!("no place back in line within 20 s (told {told:?})"),
        }
    };
    // A second notice would come with a later refresh: listen a while longer.
    let quiet = Instant::now() + Duration::from_secs(1);
    loop {
        let left = quiet.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ev.next_event(Duration::from_secs(3600))).await {
            Ok(Some(e)) if e.name == "restocked" => {
                told.push(e.data["restock"].as_u64().unwrap_or(0))
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (told, state)
}

/// Reads `ev` until its place shows `state`.
async fn until_state(ev: &mut Events, state: &str) {
    loop {
        let (_, p) = ev
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the stream ended before {state}"));
        if p["state"] == state {
            return;
        }
    }
}

/// Reads `ev` until its place shows sold out (true) or admitted, or the stream ends (false).
async fn reaches_sold_out(ev: &mut Events) -> bool {
    loop {
        match ev.next(Duration::from_secs(10)).await {
            Some((_, p)) if p["state"] == "sold_out" => return true,
            Some((_, p)) if p["state"] == "admitted" => return false,
            Some(_) => {}
            None => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_of_a_sold_out_room_are_told_once_per_restock_on_two_nodes() {
    const WAITERS: usize = 1_000;
    // A thousand streams on two debug-build nodes keep both cores busy at every refresh: not
    // beside the suites that time their answers.
    let _heavy = SOCKET_HEAVY.lock().await;
    let redis = RedisServer::start().await;
    let id = room_id();
    let sale = format!("s{}", &id[1..]);
    let mut c = config(Some(redis.url()), vec![room(&id)]);
    // One unit: the first joins are admitted against it, the rest wait; removing it then sells
    // the room out with every waiter keeping its place (a sold-out room makes no new places).
    c.sales = vec![rushgate::config::SaleConfig::with_ids(&sale, &id, 1)];
    c.admin.token = Secret(TOKEN.into());
    c.server.max_event_streams_per_client = 4 * WAITERS;
    c.store.refresh_ms = 200;
    let a = spawn_app(c.clone()).await;
    let b = spawn_app(c).await;
    a.wait_sales_read().await;
    b.wait_sales_read().await;

    // 1,000 waiters, half on each node, each listening; then the room sells out and every
    // waiter keeps its place.
    let nodes = [&a, &b];
    let mut streams: Vec<Events> = Vec::new();
    let mut i = 0;
    while streams.len() < WAITERS {
        let more: Vec<Option<Events>> = futures::stream::iter(i..i + WAITERS - streams.len())
            .map(|i| {
                let (node, id) = (nodes[i % 2], &id);
                async move {
                    let joined = node.join(id, None, None).await;
                    assert!(joined.status.is_success(), "{}", joined.body);
                    if joined.str("state") != "waiting" {
                        return None;
                    }
                    Some(Events::open(node, id, joined.str("ticket")).await)
                }
            })
            .buffer_unordered(100)
            .collect()
            .await;
        i += more.len();
        streams.extend(more.into_iter().flatten());
        assert!(i < 2 * WAITERS, "only {} of {i} joins wait", streams.len());
    }
    stock(&a, &sale, -1).await;
    futures::future::join_all(streams.iter_mut().map(|e| until_state(e, "sold_out"))).await;

    // Restock 1: every waiter is told once, then moves on in line (or is admitted).
    stock(&a, &sale, 20).await;
    let seen = futures::future::join_all(streams.iter_mut().map(through_restock)).await;
    let wrong: Vec<_> = seen.iter().filter(|(told, _)| told != &[1]).collect();
    assert!(
        wrong.is_empty(),
        "{} of {WAITERS} not told exactly once: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let admitted = seen
        .iter()
        .filter(|(_, s)| s.as_deref() == Some("admitted"))
        .count();
    let waiting: Vec<usize> = (0..WAITERS)
        .filter(|&i| seen[i].1.as_deref() == Some("waiting"))
        .collect();
    assert_eq!(admitted + waiting.len(), WAITERS, "{seen:?}");

    // Sold out again (the unsold units removed), restock 2: the waiters still in line are told
    // once more, of restock 2 only.
    stock(&b, &sale, -1_000).await;
    let mut still: Vec<&mut Events> = streams
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| waiting.contains(i))
        .map(|(_, e)| e)
        .collect();
    // Waiters admitted meanwhile (the 20 units' admissions go on) have left the line.
    let sold_out = futures::future::join_all(still.iter_mut().map(|e| reaches_sold_out(e))).await;
    let mut still: Vec<&mut Events> = still
        .into_iter()
        .zip(sold_out)
        .filter_map(|(e, s)| s.then_some(e))
        .collect();
    assert!(still.len() > WAITERS / 2, "{} still in line", still.len());
    stock(&b, &sale, 5).await;
    let again = futures::future::join_all(still.iter_mut().map(|e| through_restock(e))).await;
    let wrong: Vec<_> = again.iter().filter(|(told, _)| told != &[2]).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} not told of restock 2 exactly once: {:?}",
        wrong.len(),
        again.len(),
        &wrong[..wrong.len().min(5)]
    );
    eprintln!(
        "restocks: {WAITERS} waiters on two nodes told once each of restock 1 ({admitted} then admitted), {} told once of restock 2",
        again.len()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_rooms_waiters_hear_the_countdown_and_the_opening() {
    let id = room_id();
    let mut r = room(&id);
    let now = time::OffsetDateTime::now_utc();
    r.prequeue_opens_at = Some(now - Duration::from_secs(60));
    let opens = now + Duration::from_secs(3);
    r.opens_at = Some(opens);
    let opens_ms = (opens.unix_timestamp_nanos() / 1_000_000) as u64;
    let app = spawn_app(config(None, vec![r])).await;
    let joined = app.join(&id, None, None).await;
    assert_eq!(joined.str("state"), "prequeue", "{}", joined.body);
    let mut ev = Events::open(&app, &id, joined.str("ticket")).await;
    // The place in the pre-queue, and the countdown.
    let first = ev.next_event(Duration::from_secs(5)).await.expect("event");
    assert_eq!(
        (first.name.as_str(), &first.data["state"]),
        ("place", &json!("prequeue")),
        "{first:?}"
    );
    let countdown = ev.next_event(Duration::from_secs(5)).await.expect("event");
    assert_eq!(countdown.name, "opening", "{countdown:?}");
    let left = countdown.data["opens_in_ms"].as_u64().expect("opens_in_ms");
    assert!(left > 0 && left <= 3_000, "{countdown:?}");
    assert!(countdown.data["opens_at"].is_string(), "{countdown:?}");
    // Told at the opening (by the server's clock, the same as this one), and its place (the
    // opening's refresh may deliver the place first).
    let (mut opened_at, mut place) = (None, None);
    while opened_at.is_none() || place.is_none() {
        let e = ev.next_event(Duration::from_secs(10)).await.expect("event");
        match e.name.as_str() {
            "opened" => opened_at = Some(rushgate::clock::now_ms()),
            "place" if e.data["state"] != "prequeue" => place = Some(e),
            _ => {}
        }
    }
    let (told, place) = (opened_at.expect("opened"), place.expect("place"));
    assert!(
        told >= opens_ms && told < opens_ms + 1_000,
        "told {} ms after the opening",
        told as i64 - opens_ms as i64
    );
    assert!(
        ["waiting", "admitted"].contains(&place.data["state"].as_str().unwrap_or("")),
        "{place:?}"
    );
    eprintln!(
        "opening: told {} ms after opens_at; then {}",
        told - opens_ms,
        place.data["state"]
    );
    app.stop().await;
}
