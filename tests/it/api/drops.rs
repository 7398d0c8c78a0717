//! Scheduled drops over HTTP: 2,000 pre-queue arrivals get places in exactly the order the
//! published seed determines and are admitted in it, later arrivals queue FIFO behind them; the
//! `drop verify` CLI reproduces the order; the shuffle has no position bias (chi-squared); the
//! room modes; schedule validation.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use rushgate::config::{Config, RoomMode};
use rushgate::queue::drops::{self, shuffle};
use time::OffsetDateTime;

use crate::both_stores;
use crate::harness::*;

const ARRIVALS: usize = 2_000;
const LATE: usize = 20;

fn at(offset: Duration, ahead: bool) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    if ahead {
        now + offset
    } else {
        now - offset
    }
}

fn field(ticket: &str, i: usize) -> &str {
    ticket.split('.').nth(i).expect("ticket field")
}

fn seq_of(ticket: &str) -> u64 {
    field(ticket, 2).parse().expect("seq")
}

both_stores!(prequeue_is_shuffled_by_the_published_seed_then_fifo);
async fn prequeue_is_shuffled_by_the_published_seed_then_fifo(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut r = room(&id);
    // Slow pacing so the admission boundary can be watched: 5 a second.
    r.admit_per_minute = 300;
    r.max_active = 10_000;
    r.prequeue_opens_at = Some(at(Duration::from_secs(1), false));
    r.opens_at = Some(at(Duration::from_secs(12), true));
    let app = spawn_app(config(url, vec![r])).await;

    // The pre-queue is open: the room publishes its seed commitment, not the seed.
    wait_until(Duration::from_secs(10), "the seed commitment", || {
        let (app, id) = (&app, &id);
        async move { app.status(id).await.body["seed_sha256"].is_string() }
    })
    .await;
    let status = app.status(&id).await;
    assert_eq!(status.str("phase"), "prequeue", "{}", status.body);
    assert!(status.body["seed"].is_null(), "{}", status.body);
    let commitment = status.str("seed_sha256").to_string();

    // 2,000 arrivals during the window: each gets a ticket without a seq and a countdown.
    let tickets: Vec<String> = futures::stream::iter(0..ARRIVALS)
        .map(|i| {
            let app = &app;
            let id = &id;
            async move {
                let user = (i % 2 == 0).then(|| format!("shopper-{i}"));
                let j = app.join(id, user.as_deref(), None).await;
                assert_eq!(j.status, StatusCode::CREATED, "{}", j.body);
                assert_eq!(j.str("state"), "prequeue", "{}", j.body);
                assert!(j.body["opens_at"].is_string(), "{}", j.body);
                assert!(j.u64("opens_in_ms") > 0, "{}", j.body);
                assert_eq!(seq_of(j.str("ticket")), 0);
                j.str("ticket").to_string()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ids: Vec<String> = tickets.iter().map(|t| field(t, 1).to_string()).collect();
    // A repeat keeps the pre-queue place; polling answers the countdown.
    let again = app.join(&id, Some("shopper-0"), None).await;
    assert_eq!(
        (again.status, again.str("state")),
        (StatusCode::OK, "prequeue")
    );
    assert_eq!(
        app.position(&id, &tickets[1]).await.str("state"),
        "prequeue"
    );
    app.settle(&id).await;
    assert_eq!(
        app.status(&id).await.u64("prequeue_waiting"),
        ARRIVALS as u64
    );

    // The opening: the seed is published and matches the commitment.
    wait_until(Duration::from_secs(30), "the room opens", || {
        let (app, id) = (&app, &id);
        async move { app.status(id).await.str("phase") == "open" }
    })
    .await;
    let status = app.status(&id).await;
    let seed_hex = status.str("seed").to_string();
    assert_eq!(
        drops::seed_commitment(&seed_hex).as_deref(),
        Some(commitment.as_str())
    );
    assert_eq!(status.u64("prequeue_count"), ARRIVALS as u64);
    let seed = drops::decode_hex(&seed_hex).expect("hex seed");
    let order = shuffle(&seed, ids.clone());

    // Arrivals after the opening queue FIFO behind the whole pre-queue.
    let mut late = Vec::new();
    for i in 0..LATE {
        let j = app.join(&id, Some(&format!("late-{i}")), None).await;
        assert_eq!(j.str("state"), "waiting", "{}", j.body);
        assert_eq!(seq_of(j.str("ticket")), (ARRIVALS + 1 + i) as u64);
        late.push(j.str("ticket").to_string());
    }

    // Every pre-queue ticket's first poll learns its seq: exactly its rank in the seed's order.
    let rank: std::collections::HashMap<&str, u64> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u64 + 1))
        .collect();
    let resolved: Vec<(String, String, String)> = futures::stream::iter(tickets.iter())
        .map(|t| {
            let (app, id) = (&app, &id);
            async move {
                let p = app.position(id, t).await;
                assert_eq!(p.status, StatusCode::OK, "{}", p.body);
                assert!(
                    matches!(p.str("state"), "waiting" | "admitted"),
                    "{}",
                    p.body
                );
                // A re-issued ticket (now carrying its seq) comes with its cookie; one that did
                // not change is not set again for a client that presented it as a bearer token.
                let cookie = p
                    .set_cookies()
                    .into_iter()
                    .find(|c| c.starts_with(&format!("rg_ticket_{id}=")));
                if p.str("ticket") == t.as_str() {
                    assert_eq!(cookie, None, "{}", p.body);
                } else {
                    let cookie = cookie.expect("ticket cookie re-issued");
                    assert!(cookie.contains(p.str("ticket")));
                }
                let state = p.str("state").to_string();
                (t.clone(), p.str("ticket").to_string(), state)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let serving = app.status(&id).await.u64("serving");
    for (old, new, state) in &resolved {
        assert_eq!(field(old, 1), field(new, 1));
        let want = rank[field(new, 1)];
        if state == "waiting" {
            assert_eq!(seq_of(new), want, "{new}");
        } else {
            // Admitted before its first poll: its seq was at or below the serving number.
            assert!(want <= serving, "rank {want} admitted, serving {serving}");
        }
    }
    let by_rank: Vec<String> = {
        let mut v: Vec<&String> = resolved
            .iter()
            .filter(|(_, _, state)| state == "waiting")
            .map(|(_, new, _)| new)
            .collect();
        v.sort_by_key(|t| seq_of(t));
        v.into_iter().cloned().collect()
    };
    assert!(by_rank.len() > ARRIVALS - 200, "most still wait");

    // Admission follows that order: everyone at or below the serving number before a round of
    // polls reads admitted, everyone above it after the round still waits.
    wait_until(Duration::from_secs(20), "admissions under way", || {
        let (app, id) = (&app, &id);
        async move { app.status(id).await.u64("serving") >= serving + 10 }
    })
    .await;
    let before = app.status(&id).await.u64("serving");
    let mut states = Vec::new();
    for t in by_rank.iter().take(120) {
        states.push((
            seq_of(t),
            app.position(&id, t).await.str("state").to_string(),
        ));
    }
    let after = app.status(&id).await.u64("serving");
    assert!(
        by_rank.iter().take(120).any(|t| seq_of(t) > after),
        "pacing too fast to observe the boundary: {after}"
    );
    assert!(
        states.iter().any(|(seq, _)| *seq <= before),
        "the round includes admitted places"
    );
    for (seq, state) in &states {
        if *seq <= before {
            assert_eq!(state, "admitted", "seq {seq} (serving {before}..{after})");
        } else if *seq > after {
            assert_eq!(state, "waiting", "seq {seq} (serving {before}..{after})");
        }
    }
    // The late arrivals are still behind the pre-queue, in their arrival order.
    let mut last = 0;
    for t in &late {
        let p = app.position(&id, t).await;
        // Admissions go on while this loop runs: bound with the serving number read after.
        let serving_now = app.status(&id).await.u64("serving");
        assert_eq!(p.str("state"), "waiting");
        assert!(p.u64("position") > (ARRIVALS as u64).saturating_sub(serving_now));
        // Their own order is arrival order (positions shift between polls; seqs do not).
        assert!(seq_of(t) > last, "late arrivals out of order");
        last = seq_of(t);
    }

    // `rushgate drop verify` prints the same order from the seed and the ids (whole tickets
    // are read as their ids), and checks the commitment.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tickets.txt");
    let lines: Vec<&str> = tickets
        .iter()
        .enumerate()
        .map(|(i, t)| if i % 2 == 0 { t.as_str() } else { field(t, 1) })
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("write tickets");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
        .args([
            "drop",
            "verify",
            "--seed",
            &seed_hex,
            "--commitment",
            &commitment,
        ])
        .arg("--tickets")
        .arg(&file)
        .output()
        .expect("run rushgate drop verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(printed, order);
    let wrong = std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
        .args([
            "drop",
            "verify",
            "--seed",
            &seed_hex,
            "--commitment",
            &"0".repeat(64),
        ])
        .arg("--tickets")
        .arg(&file)
        .output()
        .expect("run rushgate drop verify");
    assert_eq!(wrong.status.code(), Some(1));
    app.stop().await;
}

/// Every id's position over many seeds is uniform: 2,000 seeds × 10 ids, one chi-squared test
/// per id over its 10 positions (9 degrees of freedom). The critical value at a significance of
/// 0.001 is 27.88; with 10 tests the chance of a false alarm is about 1%. Seeds are fixed, so
/// the test is deterministic.
#[test]
fn shuffle_positions_are_uniform() {
    const SEEDS: usize = 2_000;
    const IDS: usize = 10;
    const CRITICAL_9_DF_P001: f64 = 27.877;
    let ids: Vec<String> = (0..IDS).map(|i| format!("a{i:015}")).collect();
    let mut counts = [[0u32; IDS]; IDS];
    for s in 0..SEEDS {
        let seed = sha2::Sha256::digest(format!("seed {s}").as_bytes());
        for (pos, id) in shuffle(&seed, ids.clone()).iter().enumerate() {
            let i = ids.iter().position(|x| x == id).expect("known id");
            counts[i][pos] += 1;
        }
    }
    let expected = SEEDS as f64 / IDS as f64;
    for (i, row) in counts.iter().enumerate() {
        let chi2: f64 = row
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < CRITICAL_9_DF_P001, "id {i}: chi2 {chi2:.2} {row:?}");
    }
    // The same over all 100 (id, position) cells at once (81 degrees of freedom, p = 0.001).
    let total: f64 = counts
        .iter()
        .flatten()
        .map(|&c| (f64::from(c) - expected).powi(2) / expected)
        .sum();
    assert!(total < 124.84, "overall chi2 {total:.2}");
}

use sha2::Digest as _;

fn mode_room(mode: RoomMode) -> rushgate::config::RoomConfig {
    let mut r = room(&room_id());
    r.mode = mode;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_modes_and_schedule() {
    let queue = mode_room(RoomMode::Queue);
    let safety = mode_room(RoomMode::SafetyNet);
    let pass = mode_room(RoomMode::Passthrough);
    let closed = mode_room(RoomMode::Closed);
    let mut later = mode_room(RoomMode::SafetyNet);
    later.opens_at = Some(at(Duration::from_secs(3600), true));
    let mut pre = mode_room(RoomMode::Queue);
    pre.prequeue_opens_at = Some(at(Duration::from_secs(60), false));
    pre.opens_at = Some(at(Duration::from_secs(3600), true));
    let mut ended = mode_room(RoomMode::SafetyNet);
    ended.opens_at = Some(at(Duration::from_secs(7200), false));
    ended.closes_at = Some(at(Duration::from_secs(3600), false));
    let rooms = vec![
        queue.clone(),
        safety.clone(),
        pass.clone(),
        closed.clone(),
        later.clone(),
        pre.clone(),
        ended.clone(),
    ];
    let app = spawn_app(config(None, rooms)).await;

    // queue: even an empty room queues; the pacer then admits.
    let q = app.join(&queue.id, None, None).await;
    assert_eq!((q.status, q.str("state")), (StatusCode::CREATED, "waiting"));
    let qt = q.str("ticket").to_string();
    wait_until(
        Duration::from_secs(10),
        "the queued shopper is admitted",
        || {
            let (app, id, t) = (&app, &queue.id, &qt);
            async move { app.position(id, t).await.str("state") == "admitted" }
        },
    )
    .await;
    assert_eq!(app.status(&queue.id).await.str("mode"), "queue");

    // safety_net: admitted at once while the room has room.
    let s = app.join(&safety.id, None, None).await;
    assert_eq!(
        (s.status, s.str("state")),
        (StatusCode::CREATED, "admitted")
    );
    assert!(!s.str("pass").is_empty());

    // passthrough: everyone admitted at once with a pass; polls stay admitted.
    for _ in 0..3 {
        let p = app.join(&pass.id, None, None).await;
        assert_eq!(
            (p.status, p.str("state")),
            (StatusCode::CREATED, "admitted")
        );
        assert!(!p.str("pass").is_empty());
        let polled = app.position(&pass.id, p.str("ticket")).await;
        assert_eq!(polled.str("state"), "admitted", "{}", polled.body);
    }

    // closed: no place, no ticket.
    let c = app.join(&closed.id, None, None).await;
    assert_eq!((c.status, c.str("state")), (StatusCode::OK, "closed"));
    assert!(c.body["ticket"].is_null());
    assert_eq!(app.status(&closed.id).await.str("phase"), "closed");

    // Not yet open: closed, with the opening time.
    let l = app.join(&later.id, None, None).await;
    assert_eq!(l.str("state"), "closed", "{}", l.body);
    assert!(l.body["opens_at"].is_string(), "{}", l.body);
    assert!(l.u64("opens_in_ms") > 3_500_000);
    let st = app.status(&later.id).await;
    assert_eq!(st.str("phase"), "scheduled");
    assert_eq!(st.str("opens_at"), l.str("opens_at"));

    // Pre-queue: the JSON body and the waiting page count down.
    let p = app.join(&pre.id, None, None).await;
    assert_eq!(p.str("state"), "prequeue", "{}", p.body);
    assert!(p.body["eta_seconds"]["p50"].is_null());
    let page = app
        .client
        .get(app.api(&format!("rooms/{}/wait", pre.id)))
        .send()
        .await
        .expect("wait page");
    let html = page.text().await.expect("html");
    assert!(html.contains("data-state=\"prequeue\""), "{html}");
    assert!(html.contains("\"opens_in_ms\":"), "{html}");
    assert!(html.contains("The drop opens soon"), "{html}");

    // After closes_at: no new places.
    let e = app.join(&ended.id, None, None).await;
    assert_eq!(e.str("state"), "closed", "{}", e.body);
    assert_eq!(app.status(&ended.id).await.str("phase"), "ended");
    app.stop().await;
}

#[test]
fn schedule_validation_names_the_fields() {
    let text = r#"
        [[rooms]]
        id = "drop"
        opens_at = "2030-01-01T12:00:00Z"
        prequeue_opens_at = "2030-01-01T12:00:00Z"
        closes_at = "2030-01-01T11:00:00Z"

        [[rooms]]
        id = "other"
        mode = "passthrough"
        prequeue_opens_at = "2030-01-01T11:00:00Z"
    "#;
    let err = Config::from_toml_str(
        text,
        std::path::Path::new("t.toml"),
        &std::collections::HashMap::new(),
    )
    .expect_err("invalid schedule")
    .to_string();
    for want in [
        "rooms[0].prequeue_opens_at: must be before opens_at",
        "rooms[0].closes_at: must be after opens_at",
        "rooms[1].prequeue_opens_at: needs opens_at",
        "rooms[1].prequeue_opens_at: needs mode queue or safety_net",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    let bad_time = Config::from_toml_str(
        "[[rooms]]\nid = \"x\"\nopens_at = \"tomorrow\"\n",
        std::path::Path::new("t.toml"),
        &std::collections::HashMap::new(),
    )
    .expect_err("bad time")
    .to_string();
    assert!(bad_time.contains("rooms[0].opens_at"), "{bad_time}");
    let mode = Config::from_toml_str(
        "[[rooms]]\nid = \"x\"\nmode = \"queue\"\nopens_at = \"2030-01-01T12:00:00+02:00\"\nprequeue_opens_at = \"2030-01-01T09:00:00Z\"\n",
        std::path::Path::new("t.toml"),
        &std::collections::HashMap::new(),
    )
    .expect("valid schedule");
    assert_eq!(mode.rooms[0].mode, RoomMode::Queue);
}
