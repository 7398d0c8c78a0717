//! 500 shoppers at once through the proxy on one room (Redis store): every one is eventually
//! admitted, in join order, and the upstream never sees a request without a valid pass.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rushgate::pass::TicketSigner;

use super::proxied_room;
use super::upstream::Upstream;
use crate::harness::*;

const SHOPPERS: usize = 500;
/// How often a waiting shopper asks again (faster than the server's `poll_after_ms`, to see
/// admissions promptly).
const POLL: Duration = Duration::from_millis(300);

struct Outcome {
    seq: u64,
    /// When the first answer saying "admitted" arrived.
    admitted_at: Instant,
    /// When the last request answered "waiting" was sent.
    last_waiting_sent: Option<Instant>,
    positions: Vec<u64>,
}

async fn shop(url: String, tickets: TicketSigner) -> Outcome {
    let client = super::shopper();
    let mut seq = None;
    let mut admitted_at = None;
    let mut last_waiting_sent = None;
    let mut positions = Vec::new();
    loop {
        let sent = Instant::now();
        let r = client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .expect("request");
        if r.headers().get("x-upstream").is_some() {
            return Outcome {
                seq: seq.expect("joined before reaching the shop"),
                admitted_at: admitted_at.expect("admitted before reaching the shop"),
                last_waiting_sent,
                positions,
            };
        }
        let status = r.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            // The store did not answer in time (a loaded machine): a client retries after
            // Retry-After, as the waiting page does.
            let after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_secs(after)).await;
            continue;
        }
        let body: serde_json::Value = r.json().await.expect("json place body");
        if seq.is_none() {
            let ticket = body["ticket"]
                .as_str()
                .unwrap_or_else(|| panic!("no ticket in a {status} answer: {body}"));
            seq = Some(tickets.verify(ticket).expect("valid ticket").seq);
        }
        match body["state"].as_str() {
            Some("waiting") => {
                last_waiting_sent = Some(sent);
                positions.push(body["position"].as_u64().expect("position"));
                tokio::time::sleep(POLL).await;
            }
            Some("admitted") => {
                admitted_at.get_or_insert_with(Instant::now);
            }
            other => panic!("unexpected state {other:?}: {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_shoppers_are_admitted_in_order_and_only_with_passes() {
    let up = Upstream::start().await;
    let (_redis, url) = store_url(StoreKind::Redis).await;
    let id = room_id();
    let mut r = proxied_room(&id, &up.url());
    r.admit_per_minute = 6_000; // 100 per second: the crowd takes a few seconds to get in
    r.max_active = 1_000;
    let app = spawn_app(config(url, vec![r])).await;
    let state = app.app.as_ref().unwrap().state.clone();
    up.set_verifier(state.passes.clone(), &id);

    let product = format!("{}/products/drop", app.base);
    let tasks: Vec<_> = (0..SHOPPERS)
        .map(|_| tokio::spawn(shop(product.clone(), state.tickets.clone())))
        .collect();
    let mut outcomes = Vec::with_capacity(SHOPPERS);
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("every shopper gets in within two minutes")
            .expect("shopper task");
        outcomes.push(outcome);
    }

    // One place each.
    let seqs: HashSet<u64> = outcomes.iter().map(|o| o.seq).collect();
    assert_eq!(seqs.len(), SHOPPERS, "duplicate places");
    // Positions never go up.
    for o in &outcomes {
        assert!(
            o.positions.windows(2).all(|w| w[1] <= w[0]),
            "position went up: {:?}",
            o.positions
        );
    }
    // Join order: once a shopper has been told "admitted", nobody who joined earlier is still
    // told "waiting" by a request sent afterwards. Only the node's cached room state may lag
    // the store by a refresh or two (50 ms each), hence a small margin; poll timing does not
    // enter (both ends are measured at the client, on the right side of each request).
    outcomes.sort_by_key(|o| o.seq);
    let margin = Duration::from_millis(300);
    let mut last_waiting_earlier: Option<Instant> = None;
    let mut inversions = Vec::new();
    for o in &outcomes {
        if let Some(w) = last_waiting_earlier {
            if w > o.admitted_at + margin {
                inversions.push((o.seq, w - o.admitted_at));
            }
        }
        if let Some(w) = o.last_waiting_sent {
            last_waiting_earlier = Some(last_waiting_earlier.map_or(w, |t| t.max(w)));
        }
    }
    assert!(
        inversions.is_empty(),
        "admitted while an earlier shopper still waited: {inversions:?}"
    );
    let spread = outcomes.iter().map(|o| o.admitted_at).max().unwrap()
        - outcomes.iter().map(|o| o.admitted_at).min().unwrap();
    assert!(
        spread > Duration::from_secs(2),
        "no queue formed ({spread:?})"
    );

    // The shop saw exactly one request per shopper, each with a valid pass of its own.
    let seen = up.seen();
    assert_eq!(
        up.bad_passes(),
        0,
        "a request reached the shop without a valid pass"
    );
    assert_eq!(seen.len(), SHOPPERS);
    let subs: HashSet<String> = seen.iter().filter_map(|s| s.pass_sub.clone()).collect();
    assert_eq!(subs.len(), SHOPPERS);
    app.stop().await;
}
