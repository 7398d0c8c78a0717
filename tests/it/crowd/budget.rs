//! Budgets: position polls are answered from memory (a bounded number of store commands for
//! 10,000 polls), and a waiting shopper costs at most 160 bytes of Redis memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::clock::now_ms;
use rushgate::id::RoomId;
use rushgate::pass::TicketSigner;
use rushgate::store::{JoinOutcome, RoomStatus};

use super::{cli_u64, key};
use crate::harness::*;

/// `INFO commandstats` as command → calls.
fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| name != "info")
        .collect()
}

/// Commands a client sent (round trips), as opposed to the commands Lua scripts ran inside
/// them. rushgate's scripts call none of these, and it sends nothing else on this path.
fn is_client_command(name: &str) -> bool {
    name == "evalsha"
        || name == "eval"
        || name == "ping"
        || name == "hello"
        || name == "select"
        || name.starts_with("script|")
        || name.starts_with("client|")
}

/// How many of `calls` a client sent (see [`is_client_command`]).
fn sent_by_clients(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(name, _)| is_client_command(name))
        .map(|(_, n)| n)
        .sum()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The pacer's steady traffic per refresh, measured over `refreshes` quiet refreshes of room
/// `id`: store round trips (commands clients sent) and commands Redis ran (scripts' included).
async fn quiet_refresh(app: &TestApp, redis: &RedisServer, id: &str, refreshes: u64) -> (u64, u64) {
    let calls_before = command_calls(redis);
    let total_before = redis.total_commands();
    for _ in 0..refreshes {
        app.settle(id).await;
    }
    let trips = sent_by_clients(&delta(&calls_before, &command_calls(redis))).div_ceil(refreshes);
    let total = (redis.total_commands() - total_before).div_ceil(refreshes);
    (trips, total)
}

/// `polls` position polls spread over `tickets` (64 at a time), their answers.
async fn poll_round(app: &TestApp, id: &str, tickets: &[String], polls: usize) -> Vec<Reply> {
    stream::iter(0..polls)
        .map(|i| {
            let t = &tickets[(i * 7) % tickets.len()];
            async move { app.position(id, t).await }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// `rushgate_store_commands_total` from the admin listener's `/metrics`.
async fn metric_store_commands(app: &TestApp) -> u64 {
    let text = app.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("rushgate_store_commands_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rushgate_store_commands_total in /metrics:\n{text}"))
        as u64
}

/// After a warm-up, 10,000 position polls over 2,000 waiting tickets cause at most 500 store
/// commands: the commands clients sent, as Redis counts them in `INFO commandstats` (EVALSHA,
/// PING, …), which is also what `rushgate_store_commands_total` counts. Redis's commandstats
/// (and the harness's `total_commands`) also count every command a Lua script runs; those are
/// bounded separately below.
///
/// The pacer's steady traffic (one tick per refresh, polled or not) depends on time, not on
/// polls: it is measured over quiet refreshes first, bounded on its own, and taken out of the
/// polling window for each refresh that window spanned. Counted whole, it made the budget a
/// speed limit (10,000 polls in 14 s of a loaded debug run spanned 58 refreshes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_polls_cost_at_most_500_store_commands() {
    const WAITERS: usize = 2_000;
    const POLLS: usize = 10_000;
    const BUDGET: u64 = 500;
    const REFRESH_MS: u64 = 250;
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let mut cfg = config(Some(redis.url()), vec![r]);
    // The shipped refresh period. The pacer's steady traffic (one tick per refresh) is measured
    // and taken out below; the liveness flush that polls cause (per refresh) stays counted.
    cfg.store.refresh_ms = REFRESH_MS;
    let app = spawn_app(cfg).await;
    let id_ref = &id;
    let app_ref = &app;

    let joined: Vec<Reply> = stream::iter(0..WAITERS)
        .map(|_| async move { app_ref.join(id_ref, None, None).await })
        .buffer_unordered(100)
        .collect()
        .await;
    let tickets: Vec<String> = joined
        .iter()
        .filter(|j| j.str("state") == "waiting")
        .map(|j| j.str("ticket").to_string())
        .collect();
    assert!(tickets.len() >= WAITERS - 1, "{} waiting", tickets.len());

    // Warm-up: every ticket polled once, the records flushed, the snapshot fresh.
    let warm: Vec<Reply> = stream::iter(tickets.iter())
        .map(|t| async move { app_ref.position(id_ref, t).await })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(warm.iter().all(|p| p.str("state") == "waiting"));
    app.settle(&id).await;
    app.settle(&id).await;

    let (quiet_trips, quiet_total) = quiet_refresh(&app, &redis, &id, 4).await;
    assert!(
        quiet_trips <= 3 && quiet_total <= 30,
        "a quiet refresh costs {quiet_trips} store round trips and {quiet_total} commands inside \
         Redis (at most 3 and 30)"
    );

    let metric_before = metric_store_commands(&app).await;
    let calls_before = command_calls(&redis);
    let total_before = redis.total_commands();
    let started = Instant::now();
    let polled = poll_round(&app, &id, &tickets, POLLS).await;
    let polling = started.elapsed();
    for p in &polled {
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        assert_eq!(p.str("state"), "waiting", "{}", p.body);
    }
    // The liveness records of those polls are written by the next pacer step: count it too.
    app.settle(&id).await;
    app.settle(&id).await;
    let elapsed = started.elapsed();
    let calls = delta(&calls_before, &command_calls(&redis));
    // Refreshes the window spanned: whole periods, plus one begun at each end.
    let refreshes = elapsed.as_millis() as u64 / REFRESH_MS + 2;
    let total = (redis.total_commands() - total_before).saturating_sub(quiet_total * refreshes);
    let metric = metric_store_commands(&app).await - metric_before;
    let sent = sent_by_clients(&calls);
    let round_trips = sent.saturating_sub(quiet_trips * refreshes);
    eprintln!(
        "budget: {POLLS} polls in {polling:?} ({elapsed:?} with the flush, {refreshes} \
         refreshes of {quiet_trips} round trips / {quiet_total} commands taken out): \
         {round_trips} store round trips (metric +{metric}), {total} commands executed by \
         Redis including those inside scripts: {calls:?}"
    );
    assert!(
        round_trips <= BUDGET,
        "{POLLS} polls cost {round_trips} store commands (budget {BUDGET}): {calls:?}"
    );
    // The process-wide metric also counts every store call of this node (other tests running
    // in this process can only add to it).
    assert!(
        metric + 5 >= sent,
        "metric +{metric} < {sent} round trips seen by Redis"
    );
    // Counted inside Redis too (commands scripts run included): the batched liveness write is
    // one BITFIELD per 1,000 waiters, so the whole budget holds there as well.
    assert!(
        total <= BUDGET,
        "{total} commands executed by Redis for {POLLS} polls (budget {BUDGET}): {calls:?}"
    );
    app.stop().await;
}

/// An admitted ticket that keeps polling without presenting its pass (a native app, a second
/// tab): after the pickup, its polls are answered from the node's memory, at most 0.05 store
/// commands per poll (the budget; the pacer's steady traffic taken out as above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_polls_cost_no_store_commands_after_the_pickup() {
    const ADMITTED: usize = 200;
    const POLLS: usize = 5_000;
    const REFRESH_MS: u64 = 250;
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = 1_000;
    r.admit_per_minute = 60_000;
    let mut cfg = config(Some(redis.url()), vec![r]);
    cfg.store.refresh_ms = REFRESH_MS;
    let app = spawn_app(cfg).await;
    let (id_ref, app_ref) = (&id, &app);
    let joined: Vec<Reply> = stream::iter(0..ADMITTED)
        .map(|_| async move { app_ref.join(id_ref, None, None).await })
        .buffer_unordered(50)
        .collect()
        .await;
    let tickets: Vec<String> = joined
        .iter()
        .map(|j| {
            assert_eq!(j.str("state"), "admitted", "{}", j.body);
            j.str("ticket").to_string()
        })
        .collect();
    app.settle(&id).await;
    app.settle(&id).await;

    let (quiet_trips, _) = quiet_refresh(&app, &redis, &id, 4).await;

    let calls_before = command_calls(&redis);
    let started = Instant::now();
    let polled = poll_round(&app, &id, &tickets, POLLS).await;
    for p in &polled {
        assert_eq!(p.status, StatusCode::OK, "{}", p.body);
        assert_eq!(p.str("state"), "admitted", "{}", p.body);
        assert!(!p.str("pass").is_empty(), "{}", p.body);
    }
    app.settle(&id).await;
    let elapsed = started.elapsed();
    let calls = delta(&calls_before, &command_calls(&redis));
    let refreshes = elapsed.as_millis() as u64 / REFRESH_MS + 2;
    let round_trips = sent_by_clients(&calls).saturating_sub(quiet_trips * refreshes);
    let per_poll = round_trips as f64 / POLLS as f64;
    eprintln!(
        "admitted polls: {POLLS} in {elapsed:?}: {round_trips} store round trips beyond the \
         pacer's ({per_poll:.4} per poll): {calls:?}"
    );
    assert!(
        per_poll <= 0.05,
        "{POLLS} admitted polls cost {round_trips} store commands: {calls:?}"
    );
    app.stop().await;
}

/// 100,000 waiting shoppers cost at most 160 bytes of Redis memory each, counting their queue
/// entry, their sequence number and their liveness bits in every interval of the idle window
/// (written by the pacer's batched flush, as polls would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_per_waiting_shopper_is_at_most_160_bytes() {
    const WAITERS: u64 = 100_000;
    const BYTES_PER_WAITER: f64 = 160.0;
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    // A long idle window (liveness intervals of a minute) so every bitmap of the window is still
    // alive when memory is measured.
    r.idle_timeout_seconds = 600;
    let app = spawn_app(config(Some(redis.url()), vec![r])).await;
    let state = app.app.as_ref().unwrap().state.clone();
    let room = state.rooms.get(&id).unwrap().clone();
    let store = state.store.clone();
    let params = room.params_now();

    // Paused: nobody is admitted, as in a queue before the doors open. Scripts are loaded and
    // the room's fixed keys exist before the baseline (a warm-up room takes the first join).
    store
        .set_status(&room.id, RoomStatus::Paused)
        .await
        .unwrap();
    let warm = RoomId::parse("warmup").unwrap();
    store
        .join(
            &warm,
            &TicketSigner::anonymous_identity(),
            true,
            &params,
            now_ms(),
        )
        .await
        .unwrap();
    app.settle(&id).await;
    app.settle(&id).await;
    let used_before = redis.info_field("memory", "used_memory");

    let started = Instant::now();
    let store_ref = &store;
    let room_id_ref = &room.id;
    let params_ref = &params;
    let outcomes: Vec<JoinOutcome> = stream::iter(0..WAITERS)
        .map(|_| async move {
            store_ref
                .join(
                    room_id_ref,
                    &TicketSigner::anonymous_identity(),
                    true,
                    params_ref,
                    now_ms(),
                )
                .await
                .expect("join")
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let joining = started.elapsed();
    let mut seqs: Vec<u64> = outcomes
        .iter()
        .map(|o| match o {
            JoinOutcome::Waiting { seq, created: true } => *seq,
            other => panic!("join of a paused room: {other:?}"),
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=WAITERS).collect::<Vec<_>>());

    // Liveness as steady polling leaves it: every waiter seen in every interval of the idle
    // window (span + 1 bitmaps), each interval recorded through the room and flushed by the
    // pacer, one interval at a time (the buffer holds at most a million records).
    let span = params.idle_ms.div_ceil(params.interval_ms);
    let now = now_ms();
    let cur = params.interval_of(now);
    for back in 0..=span {
        for &seq in &seqs {
            room.record_seen(seq, now - back * params.interval_ms);
        }
        app.settle(&id).await;
        app.settle(&id).await;
    }

    // Everything measured exists: the queue, the counter, and full liveness bitmaps.
    assert_eq!(cli_u64(&redis, &["ZCARD", &key(&id, "q")]), WAITERS);
    assert_eq!(cli_u64(&redis, &["GET", &key(&id, "seq")]), WAITERS);
    for k in cur - span..=cur {
        let bitmap = key(&id, &format!("alive:{k}"));
        assert_eq!(
            cli_u64(&redis, &["BITCOUNT", &bitmap]),
            WAITERS,
            "{bitmap} holds every waiter"
        );
        assert!(
            cli_u64(&redis, &["PTTL", &bitmap]) > 10_000,
            "{bitmap} lives on"
        );
    }
    let used_after = redis.info_field("memory", "used_memory");
    let per_waiter = used_after.saturating_sub(used_before) as f64 / WAITERS as f64;
    eprintln!(
        "memory: {WAITERS} waiters joined in {joining:?}; used_memory {used_before} -> \
         {used_after}: {per_waiter:.1} B per waiter"
    );
    assert!(
        per_waiter <= BYTES_PER_WAITER,
        "{per_waiter:.1} B of Redis per waiting shopper (budget {BYTES_PER_WAITER})"
    );
    // Nobody was admitted or evicted along the way: all of them are waiting.
    assert_eq!(room.snapshot().state.waiting, WAITERS);
    assert!(started.elapsed() < Duration::from_secs(120));
    app.stop().await;
}
