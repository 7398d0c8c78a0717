//! Fairness at crowd scale: one global FIFO order across two nodes, positions that only fall,
//! the active cap never exceeded, and a silent head that cannot hold the queue.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::clock::now_ms;
use rushgate::queue::params_for;

use super::{identity_of, key, meta, seq_of};
use crate::harness::*;

/// Samples the room's `active` count while a test runs: the public status of every node and
/// `ZCARD rg:{room}:active` in Redis. Returns the largest values seen.
struct ActiveWatch {
    stop: Arc<AtomicBool>,
    max_status: Arc<AtomicU64>,
    max_zcard: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ActiveWatch {
    fn start(status_urls: Vec<String>, redis_port: u16, room: &str) -> ActiveWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max_status = Arc::new(AtomicU64::new(0));
        let max_zcard = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let status = {
            let (stop, max, samples) = (stop.clone(), max_status.clone(), samples.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    for url in &status_urls {
                        let Ok(resp) = client.get(url).send().await else {
                            continue;
                        };
                        let body: serde_json::Value = resp.json().await.unwrap_or_default();
                        if let Some(active) = body["active"].as_u64() {
                            max.fetch_max(active, Ordering::Relaxed);
                            samples.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let zcard = {
            let (stop, max, samples) = (stop.clone(), max_zcard.clone(), samples.clone());
            let active_key = key(room, "active");
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let k = active_key.clone();
                    let out =
                        tokio::task::spawn_blocking(move || redis_cli(redis_port, &["ZCARD", &k]))
                            .await
                            .unwrap_or_default();
                    if let Ok(n) = out.trim().parse::<u64>() {
                        max.fetch_max(n, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
        };
        ActiveWatch {
            stop,
            max_status,
            max_zcard,
            samples,
            tasks: vec![status, zcard],
        }
    }

    fn max(&self) -> (u64, u64) {
        (
            self.max_status.load(Ordering::Relaxed),
            self.max_zcard.load(Ordering::Relaxed),
        )
    }

    async fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let (s, z) = (
            self.max_status.load(Ordering::Relaxed),
            self.max_zcard.load(Ordering::Relaxed),
        );
        (s, z, self.samples.load(Ordering::Relaxed))
    }
}

/// 5,000 concurrent joins split over two nodes sharing one Redis: 5,000 distinct tickets with
/// sequence numbers 1..=5000; the waiters' positions are 1..N exactly once (asked of the node
/// they did *not* join on); admissions then follow the join sequence exactly, batch after batch,
/// and `active` never exceeds `max_active` on either node or in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_joins_on_two_nodes_admit_in_one_fifo_order() {
    const SHOPPERS: u64 = 5_000;
    const MAX_ACTIVE: u64 = 50;
    let started = Instant::now();
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = MAX_ACTIVE as u32;
    r.admit_per_minute = 600_000;
    r.session_seconds = 3_600;
    // Nobody is evicted as idle during the test: the order under test is the pure FIFO one.
    r.idle_timeout_seconds = 300;
    let nodes = [
        spawn_app(config(Some(redis.url()), vec![r.clone()])).await,
        spawn_app(config(Some(redis.url()), vec![r])).await,
    ];
    let watch = ActiveWatch::start(
        nodes
            .iter()
            .map(|n| n.api(&format!("rooms/{id}")))
            .collect(),
        redis.port,
        &id,
    );

    // The rush: every join in flight at once (500 concurrent requests), alternating nodes.
    let id_ref = &id;
    let nodes_ref = &nodes;
    let joined: Vec<(usize, Reply)> = stream::iter(0..SHOPPERS as usize)
        .map(|i| async move { (i % 2, nodes_ref[i % 2].join(id_ref, None, None).await) })
        .buffer_unordered(500)
        .collect()
        .await;
    let rush = started.elapsed();

    let mut by_seq: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    let mut identities = HashSet::new();
    let mut join_positions: BTreeMap<u64, u64> = BTreeMap::new();
    let mut admitted_at_join = BTreeSet::new();
    for (node, reply) in &joined {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let ticket = reply.str("ticket").to_string();
        let seq = seq_of(&ticket);
        assert!(
            identities.insert(identity_of(&ticket)),
            "identity handed out twice: {ticket}"
        );
        match reply.str("state") {
            "admitted" => {
                assert!(!reply.str("pass").is_empty(), "{}", reply.body);
                admitted_at_join.insert(seq);
            }
            "waiting" => {
                join_positions.insert(seq, reply.u64("position"));
            }
            other => panic!("join answered state {other}: {}", reply.body),
        }
        assert!(
            by_seq.insert(seq, (*node, ticket)).is_none(),
            "sequence number {seq} handed out twice"
        );
    }
    assert_eq!(by_seq.len() as u64, SHOPPERS, "distinct tickets");
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=SHOPPERS).collect::<Vec<_>>(),
        "sequence numbers are exactly 1..=5000"
    );
    // Admission at join happens only while nobody waits, so it can only take the lowest seqs.
    assert!(
        admitted_at_join.iter().all(|&s| s <= MAX_ACTIVE),
        "admitted at join beyond the first {MAX_ACTIVE}: {admitted_at_join:?}"
    );
    assert!(!admitted_at_join.is_empty());

    // Both nodes see the settled state (twice: a tick in flight during the rush may publish late).
    for n in &nodes {
        n.settle(&id).await;
        n.settle(&id).await;
    }
    assert_eq!(meta(&redis, &id, "served"), MAX_ACTIVE, "served watermark");
    assert_eq!(
        super::cli_u64(&redis, &["ZCARD", &key(&id, "active")]),
        MAX_ACTIVE
    );
    assert_eq!(
        super::cli_u64(&redis, &["ZCARD", &key(&id, "q")]),
        SHOPPERS - MAX_ACTIVE
    );

    // Every shopper asks the other node where it stands.
    let polled: Vec<(u64, Reply)> = stream::iter(by_seq.iter())
        .map(|(&seq, (node, ticket))| async move {
            (seq, nodes_ref[1 - node].position(id_ref, ticket).await)
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut positions: BTreeMap<u64, u64> = BTreeMap::new();
    for (seq, reply) in &polled {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if *seq <= MAX_ACTIVE {
            assert_eq!(reply.str("state"), "admitted", "seq {seq}: {}", reply.body);
            assert!(!reply.str("pass").is_empty());
        } else {
            assert_eq!(reply.str("state"), "waiting", "seq {seq}: {}", reply.body);
            positions.insert(*seq, reply.u64("position"));
        }
    }
    let waiters = SHOPPERS - MAX_ACTIVE;
    let mut seen_positions: Vec<u64> = positions.values().copied().collect();
    seen_positions.sort_unstable();
    assert_eq!(
        seen_positions,
        (1..=waiters).collect::<Vec<_>>(),
        "waiter positions are 1..={waiters}, each exactly once"
    );
    for (seq, pos) in &positions {
        assert_eq!(*pos, seq - MAX_ACTIVE, "position follows the join sequence");
        // What the join said can only have been the same or further back.
        if let Some(at_join) = join_positions.get(seq) {
            assert!(
                at_join >= pos,
                "seq {seq}: position {at_join} at join, later {pos}"
            );
        }
    }

    // Let admission run: free slots in batches of varying size (sessions ended on either node)
    // and check after each batch that exactly the next waiters in join order got in.
    let mut admitted: BTreeSet<u64> = (1..=MAX_ACTIVE).collect();
    let mut next = MAX_ACTIVE + 1;
    let batches = [1u64, 2, 50, 7, 1, 33, 13, 50, 5, 1, 24, 40, 3, 50, 9];
    for (round, &k) in batches.iter().enumerate() {
        // Which admitted shoppers leave: spread over the admitted set, not just its oldest.
        let mut leaving: Vec<u64> = admitted.iter().copied().collect();
        leaving.sort_by_key(|s| (s.wrapping_mul(2_654_435_761) ^ round as u64) % 1_000_003);
        leaving.truncate(k as usize);
        let left: Vec<Reply> = stream::iter(leaving.iter())
            .map(|seq| {
                let (node, ticket) = &by_seq[seq];
                let node = &nodes_ref[(*node + round) % 2];
                async move { node.leave(id_ref, ticket).await }
            })
            .buffer_unordered(50)
            .collect()
            .await;
        for l in &left {
            assert_eq!(l.status, StatusCode::OK, "{}", l.body);
            assert_eq!(l.body["gave_up"], "admitted", "{}", l.body);
        }
        for s in &leaving {
            admitted.remove(s);
        }
        let expected_served = next + k - 1;
        for n in &nodes {
            wait_until(
                Duration::from_secs(10),
                &format!("round {round}: both nodes serve up to {expected_served}"),
                || async move {
                    let s = n.status(id_ref).await;
                    s.u64("serving") == expected_served && s.u64("active") == MAX_ACTIVE
                },
            )
            .await;
        }
        admitted.extend(next..=expected_served);
        next = expected_served + 1;

        // Redis holds exactly the expected admitted identities: the oldest-joined, in order.
        let in_redis: HashSet<String> = redis
            .cli(&["ZRANGE", &key(&id, "active"), "0", "-1"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let expected: HashSet<String> =
            admitted.iter().map(|s| identity_of(&by_seq[s].1)).collect();
        assert_eq!(
            in_redis, expected,
            "round {round}: admitted set is not the join-order prefix"
        );
        let (max_status, max_zcard) = watch.max();
        assert!(
            max_status <= MAX_ACTIVE && max_zcard <= MAX_ACTIVE,
            "round {round}: active went over the cap (status {max_status}, redis {max_zcard})"
        );

        // Through the API: the newly admitted get passes; the next in line stand at 1, 2, 3.
        for seq in (expected_served + 1 - k)..=expected_served {
            let (node, ticket) = &by_seq[&seq];
            let p = nodes[(node + round + 1) % 2].position(&id, ticket).await;
            assert_eq!(p.str("state"), "admitted", "seq {seq}: {}", p.body);
            assert!(!p.str("pass").is_empty());
        }
        for (i, seq) in (next..next + 3).enumerate() {
            let (node, ticket) = &by_seq[&seq];
            let p = nodes[*node].position(&id, ticket).await;
            assert_eq!(p.str("state"), "waiting", "seq {seq}: {}", p.body);
            assert_eq!(p.u64("position"), i as u64 + 1, "seq {seq}: {}", p.body);
        }
    }

    let (max_status, max_zcard, samples) = watch.finish().await;
    assert!(samples > 100, "the cap watch sampled only {samples} times");
    assert_eq!(
        max_status, MAX_ACTIVE,
        "status never showed more than the cap"
    );
    assert_eq!(max_zcard, MAX_ACTIVE, "Redis never held more than the cap");
    assert_eq!(meta(&redis, &id, "evicted"), 0);
    eprintln!(
        "fairness: {SHOPPERS} joins in {rush:?}, {} admitted in order, total {:?}",
        next - 1,
        started.elapsed()
    );
    for n in nodes {
        n.stop().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Polls until admitted.
    Tracked,
    /// Joins and never polls again: evicted as idle when it reaches the head.
    Silent,
    /// Polls a few times, then leaves.
    Leaver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Admitted,
    Expired,
    Left,
    TimedOut,
}

/// Positions seen by one shopper (join answer first, then every poll), always on one node.
#[derive(Debug)]
struct Trace {
    seq: u64,
    role: Role,
    positions: Vec<u64>,
    end: End,
}

/// A waiter's position never increases from one poll to the next on its node while others
/// join, leave and get evicted around it, and every waiter that keeps polling gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_never_increase_while_others_join_leave_and_get_evicted() {
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 6;
    r.admit_per_minute = 600;
    r.session_seconds = 1;
    r.idle_timeout_seconds = 2;
    let nodes = [
        spawn_app(config(Some(redis.url()), vec![r.clone()])).await,
        spawn_app(config(Some(redis.url()), vec![r])).await,
    ];
    let id_ref = &id;

    // 80 shoppers in join order: tracked, tracked, silent, leaver, …, alternating nodes.
    let mut shoppers = Vec::new();
    for i in 0..80usize {
        let role = match i % 4 {
            0 | 1 => Role::Tracked,
            2 => Role::Silent,
            _ => Role::Leaver,
        };
        let node = i % 2;
        let j = nodes[node].join(&id, None, None).await;
        assert_eq!(j.status, StatusCode::CREATED, "{}", j.body);
        let ticket = j.str("ticket").to_string();
        let first = match j.str("state") {
            "waiting" => Some(j.u64("position")),
            "admitted" => None,
            other => panic!("join: {other}"),
        };
        shoppers.push((i, role, node, ticket, first));
    }

    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(45);
    let traces = async {
        let traces =
            futures::future::join_all(shoppers.iter().map(|(i, role, node, ticket, first)| {
                let node = &nodes[*node];
                async move {
                    let mut trace = Trace {
                        seq: seq_of(ticket),
                        role: *role,
                        positions: first.iter().copied().collect(),
                        end: End::TimedOut,
                    };
                    if first.is_none() {
                        trace.end = End::Admitted;
                        return trace;
                    }
                    if *role == Role::Silent {
                        return trace;
                    }
                    // Leavers give up after 1..=7 polls, so some leave near the head.
                    let leave_after = (*role == Role::Leaver).then_some(1 + i % 7);
                    let mut ticker = tokio::time::interval(Duration::from_millis(200));
                    while Instant::now() < deadline {
                        ticker.tick().await;
                        let p = node.position(id_ref, ticket).await;
                        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
                        match p.str("state") {
                            "waiting" => trace.positions.push(p.u64("position")),
                            "admitted" => {
                                assert!(!p.str("pass").is_empty());
                                trace.end = End::Admitted;
                                break;
                            }
                            "expired" => {
                                trace.end = End::Expired;
                                break;
                            }
                            other => panic!("position: {other}"),
                        }
                        if leave_after.is_some_and(|n| trace.positions.len() > n) {
                            let l = node.leave(id_ref, ticket).await;
                            assert_eq!(l.status, StatusCode::OK, "{}", l.body);
                            trace.end = End::Left;
                            break;
                        }
                    }
                    trace
                }
            }))
            .await;
        done.store(true, Ordering::Relaxed);
        traces
    };
    // Newcomers keep joining behind everyone while the crowd moves.
    let newcomers = async {
        let mut n = 0u64;
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        while !done.load(Ordering::Relaxed) {
            ticker.tick().await;
            let j = nodes[(n % 2) as usize].join(id_ref, None, None).await;
            assert!(j.status.is_success(), "{}", j.body);
            n += 1;
        }
        n
    };
    let (traces, newcomers) = futures::join!(traces, newcomers);

    let mut violations = Vec::new();
    let mut moved = 0;
    for t in &traces {
        for w in t.positions.windows(2) {
            if w[1] > w[0] {
                violations.push((t.seq, t.role, t.positions.clone()));
                break;
            }
        }
        if t.positions.first() > t.positions.last() {
            moved += 1;
        }
        if t.role == Role::Tracked {
            assert_eq!(
                t.end,
                End::Admitted,
                "a polling waiter did not get in: {t:?}"
            );
        }
    }
    assert!(
        violations.is_empty(),
        "positions increased between polls: {violations:?}"
    );
    let evicted = meta(&redis, &id, "evicted");
    let left = meta(&redis, &id, "left");
    assert!(evicted >= 5, "silent waiters were evicted: {evicted}");
    assert!(left >= 5, "leavers left: {left}");
    assert!(
        newcomers >= 10,
        "newcomers joined during the run: {newcomers}"
    );
    assert!(moved >= 20, "positions moved for only {moved} shoppers");
    eprintln!("monotone: {evicted} evicted, {left} left, {newcomers} newcomers, {moved} moved");
    for n in nodes {
        n.stop().await;
    }
}

/// A silent head never holds the queue. Phase 1: the head stops polling just as a slot frees;
/// the waiter behind it is admitted within idle timeout + one liveness interval + one pacing
/// interval + one tick (+ slack), counted from the head's last poll, and not before the idle
/// timeout. Phase 2: a head whose liveness has lapsed is evicted on the very tick that frees a
/// slot, so the waiter behind gets in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_head_is_skipped_within_the_idle_timeout() {
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    r.admit_per_minute = 6_000;
    r.session_seconds = 600;
    r.idle_timeout_seconds = 2;
    let params = params_for(&r);
    let cfg = config(Some(redis.url()), vec![r.clone()]);
    let refresh = Duration::from_millis(cfg.store.refresh_ms);
    let a = Arc::new(spawn_app(cfg.clone()).await);
    let b = Arc::new(spawn_app(cfg).await);

    let holder = a.join(&id, None, None).await;
    assert_eq!(holder.str("state"), "admitted", "{}", holder.body);
    let head = a.join(&id, None, None).await;
    let behind = b.join(&id, None, None).await;
    let third = b.join(&id, None, None).await;
    let fourth = a.join(&id, None, None).await;
    let (t_head, t_behind, t_third, t_fourth) = (
        head.str("ticket").to_string(),
        behind.str("ticket").to_string(),
        third.str("ticket").to_string(),
        fourth.str("ticket").to_string(),
    );
    a.settle(&id).await;
    b.settle(&id).await;
    for (node, t, pos) in [
        (&a, &t_head, 1),
        (&b, &t_behind, 2),
        (&b, &t_third, 3),
        (&a, &t_fourth, 4),
    ] {
        let p = node.position(&id, t).await;
        assert_eq!(p.str("state"), "waiting", "{}", p.body);
        assert_eq!(p.u64("position"), pos, "{}", p.body);
    }

    // Everyone but the head keeps polling (third stops in phase 2).
    let keep_third = Arc::new(AtomicBool::new(true));
    let stop_all = Arc::new(AtomicBool::new(false));
    let third_last_poll = Arc::new(Mutex::new(Instant::now()));
    let keepalive = {
        let (a, b, id) = (a.clone(), b.clone(), id.clone());
        let (keep_third, stop_all, third_last_poll) = (
            keep_third.clone(),
            stop_all.clone(),
            third_last_poll.clone(),
        );
        let (t_third, t_fourth) = (t_third.clone(), t_fourth.clone());
        tokio::spawn(async move {
            while !stop_all.load(Ordering::Relaxed) {
                if keep_third.load(Ordering::Relaxed) {
                    let p = b.position(&id, &t_third).await;
                    assert_eq!(p.str("state"), "waiting", "third: {}", p.body);
                    *third_last_poll.lock().unwrap() = Instant::now();
                }
                let p = a.position(&id, &t_fourth).await;
                assert_eq!(p.str("state"), "waiting", "fourth: {}", p.body);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Phase 1: the head polls one last time, then goes silent as the holder's slot frees.
    let head_seq = seq_of(&t_head);
    let alive_key = |k: u64| key(&id, &format!("alive:{k}"));
    let before = now_ms() / params.interval_ms;
    let last = a.position(&id, &t_head).await;
    let head_last_poll = Instant::now();
    let after = now_ms() / params.interval_ms;
    assert_eq!(last.str("state"), "waiting", "{}", last.body);
    assert_eq!(last.u64("position"), 1);
    // That last poll is in Redis (batched, flushed by node a's pacer) before the slot frees.
    wait_until(
        Duration::from_secs(5),
        "the head's last poll is flushed",
        || {
            let seen = (before..=after).any(|k| {
                redis
                    .cli(&["GETBIT", &alive_key(k), &head_seq.to_string()])
                    .trim()
                    == "1"
            });
            async move { seen }
        },
    )
    .await;
    let left = a.leave(&id, holder.str("ticket")).await;
    assert_eq!(left.body["gave_up"], "admitted", "{}", left.body);
    wait_until(
        Duration::from_secs(10),
        "the waiter behind the silent head is admitted",
        || {
            let (b, id, t) = (&b, &id, &t_behind);
            async move {
                let p = b.position(id, t).await;
                match p.str("state") {
                    "admitted" => true,
                    "waiting" => false,
                    other => panic!("behind: {other} {}", p.body),
                }
            }
        },
    )
    .await;
    let behind_in = Instant::now();
    let waited = behind_in - head_last_poll;
    eprintln!("silent head: admission behind resumed {waited:?} after the head's last poll");
    let idle = Duration::from_secs(2);
    let bound = idle
        + Duration::from_millis(params.interval_ms)
        + Duration::from_millis(60_000 / u64::from(params.admit_per_minute))
        + refresh
        + Duration::from_millis(500);
    assert!(
        waited <= bound,
        "admission behind a silent head resumed after {waited:?}, bound {bound:?}"
    );
    assert!(
        waited + Duration::from_millis(100) >= idle,
        "the head lost its turn after only {waited:?} (idle timeout {idle:?})"
    );
    // The silent head was admitted while it still counted as alive, never picked its pass up,
    // and lost the slot on the idle clock.
    assert_eq!(a.position(&id, &t_head).await.str("state"), "expired");
    assert_eq!(meta(&redis, &id, "admitted"), 3, "holder, head, behind");
    assert_eq!(meta(&redis, &id, "evicted"), 0);

    // Phase 2: `behind` holds the slot; `third` (now the head) goes silent until its liveness
    // has lapsed in Redis; then the slot frees and `third` must be skipped at once.
    keep_third.store(false, Ordering::Relaxed);
    wait_until(Duration::from_secs(5), "the third stops polling", || {
        let l = third_last_poll.clone();
        async move { l.lock().unwrap().elapsed() > Duration::from_millis(250) }
    })
    .await;
    let third_last = *third_last_poll.lock().unwrap();
    let third_seq = seq_of(&t_third);
    let span = params.idle_ms.div_ceil(params.interval_ms);
    wait_until(
        Duration::from_secs(10),
        "the third's liveness lapses in Redis",
        || {
            let cur = now_ms() / params.interval_ms;
            let alive = (cur.saturating_sub(span)..=cur).any(|k| {
                redis
                    .cli(&["GETBIT", &alive_key(k), &third_seq.to_string()])
                    .trim()
                    == "1"
            });
            async move { !alive }
        },
    )
    .await;
    assert!(third_last.elapsed() >= idle, "liveness lapsed too early");
    stop_all.store(true, Ordering::Relaxed);
    keepalive.await.unwrap();
    let freed = Instant::now();
    let left = b.leave(&id, &t_behind).await;
    assert_eq!(left.body["gave_up"], "admitted", "{}", left.body);
    wait_until(
        Duration::from_secs(10),
        "the waiter behind the lapsed head is admitted",
        || {
            let (a, id, t) = (&a, &id, &t_fourth);
            async move { a.position(id, t).await.str("state") == "admitted" }
        },
    )
    .await;
    let fourth_in = Instant::now();
    let waited = fourth_in - freed;
    eprintln!("lapsed head: admission behind {waited:?} after the slot freed");
    let bound = Duration::from_millis(60_000 / u64::from(params.admit_per_minute))
        + refresh
        + Duration::from_millis(500);
    assert!(
        waited <= bound,
        "a lapsed head held the freed slot for {waited:?} (bound {bound:?})"
    );
    b.settle(&id).await;
    assert_eq!(b.position(&id, &t_third).await.str("state"), "expired");
    assert_eq!(
        meta(&redis, &id, "evicted"),
        1,
        "the lapsed head was evicted"
    );
    drop((a, b));
}
