//! The fault-injection suite: a drop (300 shoppers on two nodes, 60 units, 40 coupons) runs
//! while a fault hits Redis or the network to it, and every scenario checks the same
//! invariants on what the shoppers were told and what Redis holds:
//! - 0 oversold: stock adds up, and every reservation a shopper was told of (201, or 200 on a
//!   retry) is in Redis, one per buyer, and nothing else is reserved;
//! - 0 duplicate coupons: one serial per claimer, as many as the log holds;
//! - 0 duplicate positions: every shopper has its own seq;
//! - FIFO kept: every shopper admitted joined before every shopper never admitted;
//! - positions never rise on a node;
//! - no stall: while shoppers wait, admissions never pause longer than the idle timeout plus
//!   one refresh (plus the poll interval it takes to see one);
//! - every request answered: a 503 only with a retry instruction, nothing else but 2xx/409.
//!
//! Faults, each bounded (3 s, then healed): added latency past the command timeout, every
//! connection reset again and again, a partition of both nodes, a partition of one node, and
//! SIGKILL of redis-server (AOF, fsync always) restarted on its port. A rushgate node's SIGKILL
//! is `ops::drain`; a Sentinel master's SIGKILL is `topology::stores`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use rushgate::config::{CouponConfig, RoomMode, SaleConfig, Secret};
use serde_json::json;

use super::FaultProxy;
use crate::harness::*;

const SHOPPERS: usize = 300;
const STOCK: u64 = 60;
const COUPONS: u64 = 40;
const POLL: Duration = Duration::from_millis(500);
const IDLE_SECONDS: u32 = 8;
const REFRESH_MS: u64 = 50;
const FAULT: Duration = Duration::from_secs(3);
const SHOP_KEY: &str = "faults-shop-key-0123456789abcdef";

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// 1.2 s added to every reply (the command timeout is 0.5 s).
    Latency,
    /// Every connection reset every 300 ms.
    Resets,
    /// Nothing passes between either node and Redis.
    PartitionBoth,
    /// Only the first node is cut off; the second reaches Redis directly.
    PartitionOne,
    /// redis-server SIGKILLed, restarted on its port a second later (AOF, fsync always).
    KillRedis,
}

/// What one shopper saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    seq: u64,
    /// Positions answered by each node, in order.
    positions: [Vec<u64>; 2],
    admitted_at: Option<Instant>,
    reservation: Option<String>,
    sold_out: bool,
    serial: Option<u64>,
    exhausted: bool,
}

struct Scene {
    /// Behind a lock only for the kill-and-restart fault; the shoppers never touch it.
    redis: tokio::sync::Mutex<RedisServer>,
    proxies: Vec<FaultProxy>,
    nodes: Vec<TestApp>,
    room: String,
    sale: String,
    campaign: String,
}

async fn start(fault: Fault) -> Scene {
    let redis = if matches!(fault, Fault::KillRedis) {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await
    } else {
        RedisServer::start().await
    };
    let room = room_id();
    let sale = format!("s{}", &room[1..]);
    let campaign = format!("c{}", &room[1..]);
    let mut proxies = Vec::new();
    let mut nodes = Vec::new();
    for n in 0..2 {
        let url = match fault {
            Fault::KillRedis => redis.url(),
            Fault::PartitionOne if n == 1 => redis.url(),
            _ => {
                let p = FaultProxy::start(redis.port).await;
                let url = p.url();
                proxies.push(p);
                url
            }
        };
        let mut r = rushgate::config::RoomConfig::with_id(&room);
        r.mode = RoomMode::Queue;
        r.admit_per_minute = 1_200;
        r.max_active = 1_000;
        r.session_seconds = 600;
        r.idle_timeout_seconds = IDLE_SECONDS;
        let mut c = config(Some(url), vec![r]);
        c.store.refresh_ms = REFRESH_MS;
        c.store.command_timeout_ms = 500;
        c.sales = vec![SaleConfig::with_ids(&sale, &room, STOCK)];
        c.coupons = vec![CouponConfig {
            id: campaign.clone(),
            limit: COUPONS,
            room: Some(room.clone()),
        }];
        c.shop.api_key = Secret(SHOP_KEY.into());
        let app = spawn_app(c).await;
        app.wait_sales_read().await;
        nodes.push(app);
    }
    Scene {
        redis: tokio::sync::Mutex::new(redis),
        proxies,
        nodes,
        room,
        sale,
        campaign,
    }
}

/// Sends the request `make` builds again while it answers 503 (which must say how to retry),
/// up to `deadline`; `make` gets the last 503, to retry with what it gave.
async fn answered(
    make: impl Fn(Option<&Reply>) -> reqwest::RequestBuilder,
    deadline: Instant,
    odd: &Mutex<Vec<String>>,
) -> Option<Reply> {
    let mut last: Option<Reply> = None;
    loop {
        let r = match make(last.as_ref()).send().await {
            Ok(resp) => reply(resp).await,
            Err(e) => {
                odd.lock().unwrap().push(format!("transport: {e}"));
                return None;
            }
        };
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            return Some(r);
        }
        if r.str("retry").is_empty() {
            odd.lock()
                .unwrap()
                .push(format!("503 without retry: {}", r.body));
        }
        if Instant::now() > deadline {
            return None;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One shopper: joins, polls both nodes in turn until admitted, buys one unit with its own
/// idempotency key, claims a coupon; every 503 retried as it says.
async fn shopper(d: &Scene, i: usize, deadline: Instant, odd: &Mutex<Vec<String>>) -> Seen {
    let mut seen = Seen::default();
    let node = |turn: usize| &d.nodes[turn % 2];
    let join_url = node(i).api(&format!("rooms/{}/join", d.room));
    let Some(joined) = answered(
        |last| {
            let req = node(i).client.post(&join_url);
            // A 503 may have made the place: its pending ticket finds it.
            match last.map(|r| r.str("ticket")).filter(|t| !t.is_empty()) {
                Some(t) => req.bearer_auth(t),
                None => req,
            }
        },
        deadline,
        odd,
    )
    .await
    else {
        return seen;
    };
    if !joined.status.is_success() {
        odd.lock()
            .unwrap()
            .push(format!("join {}: {}", joined.status, joined.body));
        return seen;
    }
    let mut ticket = joined.str("ticket").to_string();
    if ticket.is_empty() {
        // Sold out before this shopper came: no place is made.
        seen.sold_out = joined.str("state") == "sold_out";
        if !seen.sold_out {
            odd.lock()
                .unwrap()
                .push(format!("join without a ticket: {}", joined.body));
        }
        return seen;
    }
    seen.seq = crate::crowd::seq_of(&ticket);
    let mut state = joined.str("state").to_string();
    let mut pass = joined.str("pass").to_string();
    let mut turn = i;
    while state == "waiting" {
        if Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(POLL).await;
        turn += 1;
        let n = turn % 2;
        let r = match node(n)
            .client
            .get(node(n).api(&format!("rooms/{}/position", d.room)))
            .bearer_auth(&ticket)
            .send()
            .await
        {
            Ok(resp) => reply(resp).await,
            Err(e) => {
                odd.lock().unwrap().push(format!("poll transport: {e}"));
                continue;
            }
        };
        match r.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => continue,
            other => {
                odd.lock()
                    .unwrap()
                    .push(format!("poll {other}: {}", r.body));
                return seen;
            }
        }
        state = r.str("state").to_string();
        if !r.str("ticket").is_empty() {
            ticket = r.str("ticket").to_string();
            seen.seq = crate::crowd::seq_of(&ticket);
        }
        if state == "waiting" {
            seen.positions[n].push(r.u64("position"));
        }
        pass = r.str("pass").to_string();
    }
    match state.as_str() {
        "admitted" => seen.admitted_at = Some(Instant::now()),
        "sold_out" => {
            seen.sold_out = true;
            return seen;
        }
        other => {
            odd.lock().unwrap().push(format!("ended {other}"));
            return seen;
        }
    }
    let buy_url = node(i).api(&format!("sales/{}/purchase", d.sale));
    let key = format!("buy-{i}");
    if let Some(r) = answered(
        |_| {
            node(i)
                .client
                .post(&buy_url)
                .bearer_auth(&pass)
                .json(&json!({ "quantity": 1, "idempotency_key": key }))
        },
        deadline,
        odd,
    )
    .await
    {
        match r.status {
            StatusCode::CREATED | StatusCode::OK => {
                let id = r.str("reservation_id").to_string();
                // The shop confirms it (a retried confirm answers the same state).
                let confirm_url = node(i).api(&format!("reservations/{id}/confirm"));
                let confirmed = answered(
                    |_| node(i).client.post(&confirm_url).bearer_auth(SHOP_KEY),
                    deadline,
                    odd,
                )
                .await;
                if confirmed.as_ref().map(|c| c.str("state")) != Some("confirmed") {
                    odd.lock()
                        .unwrap()
                        .push(format!("confirm of {id}: {:?}", confirmed.map(|c| c.body)));
                }
                seen.reservation = Some(id);
            }
            StatusCode::CONFLICT => seen.sold_out = true,
            other => odd
                .lock()
                .unwrap()
                .push(format!("purchase {other}: {}", r.body)),
        }
    }
    let claim_url = node(i + 1).api(&format!("coupons/{}/claim", d.campaign));
    if let Some(r) = answered(
        |_| node(i + 1).client.post(&claim_url).bearer_auth(&pass),
        deadline,
        odd,
    )
    .await
    {
        match r.status {
            StatusCode::CREATED | StatusCode::OK => seen.serial = Some(r.u64("serial")),
            StatusCode::CONFLICT => seen.exhausted = true,
            other => odd
                .lock()
                .unwrap()
                .push(format!("coupon {other}: {}", r.body)),
        }
    }
    seen
}

async fn fault_on(d: &Scene, fault: Fault) {
    match fault {
        Fault::Latency => {
            for p in &d.proxies {
                p.set_latency(Duration::from_millis(1_200));
            }
        }
        Fault::Resets => {
            let until = Instant::now() + FAULT;
            while Instant::now() < until {
                for p in &d.proxies {
                    p.reset_all();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Fault::PartitionBoth | Fault::PartitionOne => {
            for p in &d.proxies {
                p.blackhole(true);
            }
        }
        Fault::KillRedis => d.redis.lock().await.kill(),
    }
}

async fn fault_off(d: &Scene, fault: Fault) {
    match fault {
        Fault::Latency => {
            for p in &d.proxies {
                p.set_latency(Duration::ZERO);
            }
        }
        Fault::Resets => {}
        Fault::PartitionBoth | Fault::PartitionOne => {
            for p in &d.proxies {
                p.blackhole(false);
            }
        }
        Fault::KillRedis => d.redis.lock().await.restart().await,
    }
}

/// Runs the drop under `fault` (from 1.5 s in, for 3 s) and checks every invariant.
async fn drop_under(fault: Fault) {
    let d = start(fault).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    let odd = Mutex::new(Vec::new());
    let (d_ref, odd_ref) = (&d, &odd);
    let crowd = join_all((0..SHOPPERS).map(|i| async move {
        // Arrivals over the first second.
        tokio::time::sleep(Duration::from_millis((i as u64 * 3) % 1_000)).await;
        shopper(d_ref, i, deadline, odd_ref).await
    }));
    let faults = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let on = Instant::now();
        fault_on(d_ref, fault).await;
        tokio::time::sleep(FAULT.saturating_sub(on.elapsed())).await;
        fault_off(d_ref, fault).await;
    };
    let (seen, ()) = tokio::join!(crowd, faults);
    check(&d, fault, &seen, &odd, started).await;
    for node in d.nodes {
        node.stop().await;
    }
}

async fn check(d: &Scene, fault: Fault, seen: &[Seen], odd: &Mutex<Vec<String>>, started: Instant) {
    let odd = odd.lock().unwrap().clone();
    assert!(
        odd.is_empty(),
        "{fault:?}: {} odd answers: {:?}",
        odd.len(),
        &odd[..odd.len().min(5)]
    );
    // Everybody got an answer: a unit, or sold out.
    let unserved = seen
        .iter()
        .filter(|s| s.reservation.is_none() && !s.sold_out)
        .count();
    let sample: Vec<String> = seen
        .iter()
        .filter(|s| s.reservation.is_none() && !s.sold_out)
        .take(3)
        .map(|s| {
            format!(
                "seq {} admitted {:?} positions {:?}",
                s.seq,
                s.admitted_at.map(|a| a - started),
                s.positions
            )
        })
        .collect();
    assert_eq!(
        unserved, 0,
        "{fault:?}: shoppers left without an answer: {sample:?}"
    );

    // 0 duplicate positions: every shopper with a place has its own seq.
    let placed: Vec<u64> = seen.iter().map(|s| s.seq).filter(|&q| q > 0).collect();
    let seqs: HashSet<u64> = placed.iter().copied().collect();
    assert_eq!(
        seqs.len(),
        placed.len(),
        "{fault:?}: two shoppers share a seq"
    );

    // 0 oversold; every reservation told is in Redis.
    let told: HashSet<&str> = seen
        .iter()
        .filter_map(|s| s.reservation.as_deref())
        .collect();
    let buyers = seen.iter().filter(|s| s.reservation.is_some()).count();
    assert_eq!(
        told.len(),
        buyers,
        "{fault:?}: two buyers told the same reservation"
    );
    let store = &d.nodes[0].app.as_ref().expect("running").state.sale_store;
    let sale = typed_sale(&d.sale);
    let state = store.sale_state(&sale).await.expect("sale state");
    assert_eq!(
        state.available + state.reserved + state.confirmed,
        STOCK,
        "{fault:?}: {state:?}"
    );
    assert_eq!(
        state.reserved + state.confirmed,
        told.len() as u64,
        "{fault:?}: {state:?}"
    );
    assert_eq!(state.confirmed, told.len() as u64, "{fault:?}: {state:?}");
    let redis = d.redis.lock().await;
    for id in &told {
        let there = redis.cli(&["HEXISTS", &format!("rg:{{{}}}:rsv", d.sale), id]);
        assert_eq!(
            there.trim(),
            "1",
            "{fault:?}: reservation {id} told but not in Redis"
        );
    }

    // 0 duplicate coupons.
    let serials: Vec<u64> = seen.iter().filter_map(|s| s.serial).collect();
    let distinct: HashSet<u64> = serials.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        serials.len(),
        "{fault:?}: a serial issued twice"
    );
    assert!(serials.len() as u64 <= COUPONS);
    let log = store
        .coupon_log_len(&typed_campaign(&d.campaign))
        .await
        .expect("coupon log");
    assert_eq!(
        log,
        serials.len() as u64,
        "{fault:?}: coupon log and answers disagree"
    );

    // FIFO: the line was never jumped. Every shopper admitted joined before every shopper
    // who kept a place and was never admitted (the pacer only ever takes the head; a ghost
    // join keeps the seq it was given).
    let admitted: Vec<(u64, Instant)> = seen
        .iter()
        .filter_map(|s| s.admitted_at.map(|a| (s.seq, a)))
        .collect();
    let last_admitted = admitted.iter().map(|(q, _)| *q).max().unwrap_or(0);
    let first_left = seen
        .iter()
        .filter(|s| s.admitted_at.is_none() && s.seq > 0)
        .map(|s| s.seq)
        .min()
        .unwrap_or(u64::MAX);
    assert!(
        last_admitted < first_left,
        "{fault:?}: seq {last_admitted} admitted while seq {first_left} never was"
    );

    // Positions never rise on a node.
    for s in seen {
        for (n, p) in s.positions.iter().enumerate() {
            assert!(
                p.windows(2).all(|w| w[1] <= w[0]),
                "{fault:?}: seq {} positions on node {n}: {p:?}",
                s.seq
            );
        }
    }

    // No stall: consecutive admissions never further apart than the idle timeout plus one
    // refresh (and the poll interval it takes to see one).
    let mut times: Vec<Instant> = admitted.iter().map(|(_, a)| *a).collect();
    times.sort();
    let bound =
        Duration::from_secs(u64::from(IDLE_SECONDS)) + Duration::from_millis(REFRESH_MS) + 2 * POLL;
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(gap <= bound, "{fault:?}: admissions stalled for {gap:?}");
    eprintln!(
        "{fault:?}: {} admitted, {} units reserved, {} coupons, longest pause {:.2} s, {:.1} s",
        admitted.len(),
        told.len(),
        serials.len(),
        gap.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_replies_slower_than_the_command_timeout() {
    drop_under(Fault::Latency).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_connections_reset_again_and_again() {
    drop_under(Fault::Resets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_both_nodes_partitioned_from_redis() {
    drop_under(Fault::PartitionBoth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_one_node_partitioned_from_redis() {
    drop_under(Fault::PartitionOne).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_with_redis_killed_and_restarted() {
    drop_under(Fault::KillRedis).await;
}
