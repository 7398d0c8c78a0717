//! `on_store_error = "capped"`: Redis stops (SIGSTOP) for 10 s while 2,000 shoppers wait on
//! two nodes. Admissions go on, on each node's lease: waiters in queue order, at no more than
//! the room's rate, and never more than the leases, so never above `max_active` in total; the
//! passes are marked `deg`; the status API and the metrics say `capped`; when Redis answers
//! again each node records its admissions and the store's counts agree with what shoppers were
//! told.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::config::OnStoreError;
use serde_json::Value;

use super::{pause, resume};
use crate::harness::*;

const SHOPPERS: usize = 2_000;
const RATE_PER_MIN: u32 = 600;
const MAX_ACTIVE: u32 = 120;
const OUTAGE: Duration = Duration::from_secs(10);

/// One admission a shopper saw: when, whether its pass was issued during the outage, and who.
#[derive(Debug, Clone)]
struct Admission {
    at: Instant,
    deg: bool,
    sub: String,
}

fn claims_of(pass: &str) -> Value {
    let payload = pass.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_mode_admits_within_the_rooms_limits_through_a_redis_outage() {
    let redis = RedisServer::start().await;
    let pid = redis.pid().expect("redis pid");
    let id = room_id();
    let mut r = room(&id);
    r.admit_per_minute = RATE_PER_MIN;
    r.max_active = MAX_ACTIVE;
    r.idle_timeout_seconds = 120;
    let mut c = config(Some(redis.url()), vec![r]);
    c.store.on_store_error = OnStoreError::Capped;
    c.store.capped_lease_seconds = 15;
    c.store.command_timeout_ms = 1_000;
    let nodes = [spawn_app(c.clone()).await, spawn_app(c).await];
    let status = |n: usize| {
        let node = &nodes[n];
        let path = format!("/admin/v1/rooms/{id}");
        async move { node.admin_get(&path).await }
    };
    wait_until(
        Duration::from_secs(10),
        "both nodes hold a lease",
        || async {
            status(0).await.body["lease"]["slots"].as_u64().unwrap_or(0) > 0
                && status(1).await.body["lease"]["slots"].as_u64().unwrap_or(0) > 0
        },
    )
    .await;

    // 2,000 shoppers join through both nodes.
    let tickets: Vec<String> = stream::iter(0..SHOPPERS)
        .map(|i| {
            let node = &nodes[i % 2];
            let room = id.clone();
            async move {
                let joined = node.join(&room, None, None).await;
                assert!(joined.status.is_success(), "{}", joined.body);
                joined.str("ticket").to_string()
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;

    // Each shopper polls the nodes in turn every 2 s until admitted.
    let admissions: Arc<Mutex<Vec<Admission>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut pollers = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let clients = [nodes[0].client.clone(), nodes[1].client.clone()];
        let urls = [
            nodes[0].api(&format!("rooms/{id}/position")),
            nodes[1].api(&format!("rooms/{id}/position")),
        ];
        let (admissions, stop, errors) = (admissions.clone(), stop.clone(), errors.clone());
        pollers.push(tokio::spawn(async move {
            // Spread the polls over the interval.
            tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 2_000)).await;
            let mut turn = i;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let n = turn % 2;
                let resp = clients[n].get(&urls[n]).bearer_auth(&ticket).send().await;
                if let Ok(resp) = resp {
                    let r = reply(resp).await;
                    if r.status == StatusCode::OK && r.str("state") == "admitted" {
                        let claims = claims_of(r.str("pass"));
                        admissions.lock().unwrap().push(Admission {
                            at: Instant::now(),
                            deg: claims["deg"].as_bool().unwrap_or(false),
                            sub: claims["sub"].as_str().unwrap_or_default().to_string(),
                        });
                        return;
                    }
                    // A 503 (an admitted shopper's claim while Redis is stopped and the
                    // lease is used up) is an honest answer to retry; anything else is not.
                    if r.status != StatusCode::OK && r.status != StatusCode::SERVICE_UNAVAILABLE {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.body));
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }
    wait_until(
        Duration::from_secs(20),
        "some shoppers are admitted",
        || {
            let n = admissions.lock().unwrap().len();
            async move { n >= 20 }
        },
    )
    .await;

    // Redis stops answering.
    let before: u64 = redis
        .cli(&["ZCARD", &format!("rg:{{{id}}}:active")])
        .trim()
        .parse()
        .expect("active count");
    pause(pid);
    let stopped = Instant::now();
    wait_until(Duration::from_secs(5), "both nodes say capped", || async {
        status(0).await.str("store_mode") == "capped"
            && status(1).await.str("store_mode") == "capped"
    })
    .await;
    let metrics = nodes[0].metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rushgate_room_store_mode{")
                && l.contains("mode=\"capped\"")
                && l.contains(&format!("room=\"{id}\""))
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let leased: u64 = (0..2)
        .map(|n| {
            let view = &nodes[n].app.as_ref().expect("running").state;
            let room = view.rooms.get(&id).expect("room");
            room.outage.lease_view(0).slots
        })
        .sum();
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    resume(pid);
    let resumed = Instant::now();

    // Back: both nodes record their admissions and go back to normal by themselves.
    wait_until(
        Duration::from_secs(15),
        "both nodes are back to normal",
        || async {
            let (a, b) = (status(0).await, status(1).await);
            a.str("store_mode") == "normal"
                && b.str("store_mode") == "normal"
                && a.body["lease"]["used"] == 0
                && b.body["lease"]["used"] == 0
        },
    )
    .await;
    // The room keeps admitting from the store afterwards.
    let after_outage = admissions.lock().unwrap().len();
    wait_until(
        Duration::from_secs(15),
        "admissions go on after recovery",
        || {
            let n = admissions.lock().unwrap().len();
            async move { n > after_outage }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        let _ = p.await;
    }

    let seen = admissions.lock().unwrap().clone();
    let during: Vec<&Admission> = seen.iter().filter(|a| a.deg).collect();
    eprintln!(
        "capped: {} admitted before the outage (store), {} on leases of {leased} slots during \
         {:.1} s, {} in all; errors {:?}",
        before,
        during.len(),
        (resumed - stopped).as_secs_f64(),
        seen.len(),
        errors.lock().unwrap().iter().take(3).collect::<Vec<_>>()
    );
    // On leases only; admissions went on while Redis was stopped. (A loaded node may also
    // find a refresh too slow and serve capped for a moment: within its lease all the same.)
    assert!(
        during.len() as u64 <= leased,
        "{} > leased {leased}",
        during.len()
    );
    let in_outage: Vec<&Admission> = during
        .iter()
        .copied()
        .filter(|a| a.at >= stopped && a.at <= resumed + Duration::from_secs(2))
        .collect();
    assert!(
        !in_outage.is_empty(),
        "nobody was admitted during the outage"
    );
    // No faster than the room's rate (each node its share, plus one at once each).
    let rate_per_s = f64::from(RATE_PER_MIN) / 60.0;
    for a in &in_outage {
        let elapsed = (a.at - stopped).as_secs_f64();
        let so_far = in_outage.iter().filter(|b| b.at <= a.at).count() as f64;
        assert!(
            so_far <= 2.0 + rate_per_s * elapsed + 1.0,
            "{so_far} admitted {elapsed:.1} s into the outage"
        );
    }
    // Never above max_active in total, and the store agrees: every outage admission is an
    // admitted session there, out of the queue, counted once.
    let subs: HashSet<&str> = seen.iter().map(|a| a.sub.as_str()).collect();
    assert_eq!(subs.len(), seen.len(), "a shopper admitted twice");
    assert!(seen.len() <= MAX_ACTIVE as usize, "{} admitted", seen.len());
    let active: u64 = redis
        .cli(&["ZCARD", &format!("rg:{{{id}}}:active")])
        .trim()
        .parse()
        .expect("active count");
    assert!(active <= u64::from(MAX_ACTIVE), "{active} active");
    assert!(active >= seen.len() as u64, "{active} < {}", seen.len());
    for a in &during {
        let score = redis.cli(&["ZSCORE", &format!("rg:{{{id}}}:active"), &a.sub]);
        assert!(!score.trim().is_empty(), "{} not recorded", a.sub);
        let queued = redis.cli(&["ZSCORE", &format!("rg:{{{id}}}:q"), &a.sub]);
        assert!(queued.trim().is_empty(), "{} still queued", a.sub);
    }
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    for node in nodes {
        node.stop().await;
    }
}
