//! Event streams at crowd scale, against the built binary on a private redis-server: 20,000
//! waiters each hold an open stream; an admission-rate change and a message change reach every
//! stream within a second of the refresh; the node's memory per open stream is measured; Redis
//! commands per second do not grow with the number of streams (the fan-out is one watch per
//! room, not a store call per stream).
//!
//! The streams are HTTP/2 streams, 200 on each of 100 connections (the node's limit per
//! connection), as browsers over HTTPS carry every tab's `EventSource` on one connection. One
//! connection per stream cannot reach 20,000 here: the hard open-file limit of a process is
//! 20,000 and cannot be raised without CAP_SYS_RESOURCE.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RedisServer;
use crate::harness::{free_port, room_id, wait_until};

/// Streams held open at once.
const STREAMS: usize = 20_000;

/// Streams on each HTTP/2 connection: the node allows 200 at once on one connection.
const PER_CONNECTION: usize = 200;

struct Node {
    child: Child,
    public: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_streams_see_a_rate_change_and_a_message_within_a_second() {
    let _heavy = crate::harness::SOCKET_HEAVY.lock().await;
    let redis = RedisServer::start().await;
    let room = room_id();
    let dir = tempfile::tempdir().unwrap();
    let (public, admin) = (free_port(), free_port());
    let config = dir.path().join("rushgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             max_event_streams_per_client = 100000\n\
             [store]\nredis_url = \"{}\"\n\
             [passes]\nsigning_key_file = \"{}\"\nticket_secret = \"streams-test-secret-0123456\"\n\
             [limits]\njoin_per_minute = 0\npoll_per_minute = 0\n\
             [log]\nlevel = \"warn\"\n\
             [[rooms]]\nid = \"{room}\"\nadmit_per_minute = 1\nmax_active = 100000\n\
             idle_timeout_seconds = 600\n",
            redis.url(),
            dir.path().join("key.pem").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rushgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node {
        child,
        public,
        admin,
        _dir: dir,
    };
    // One HTTP/2 connection per client (reqwest keeps one per host and queues what exceeds its
    // concurrent streams).
    let h2 = || {
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap()
    };
    let client = h2();
    let api = format!("http://127.0.0.1:{}/_rushgate/v1", node.public);
    let admin_url = format!("http://127.0.0.1:{}", node.admin);
    wait_until(Duration::from_secs(20), "the node is ready", || async {
        client
            .get(format!("{admin_url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // The first join takes the bucket's one token; everyone after waits (one admission a
    // minute, none while the test looks, or a stream that ends is not counted on).
    let join = |client: reqwest::Client, api: String, room: String| async move {
        let r = client
            .post(format!("{api}/rooms/{room}/join"))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        body["ticket"].as_str().unwrap().to_string()
    };
    join(client.clone(), api.clone(), room.clone()).await;
    // Waves of 500 requests on four connections, 125 on each: a connection kept at its 200
    // streams would see new ones refused while the node releases the finished ones (and, past
    // a thousand refusals, the connection closed).
    let pool: Vec<reqwest::Client> = (0..4).map(|_| h2()).collect();
    let mut tickets = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS / 500 {
        let joins: Vec<_> = (0..500)
            .map(|k| tokio::spawn(join(pool[k % 4].clone(), api.clone(), room.clone())))
            .collect();
        for j in joins {
            tickets.push(j.await.unwrap());
        }
    }

    // Redis commands per second with no stream open and every waiter polling once in the
    // window (a poller's cadence): the liveness records a waiter costs either way.
    let window = Duration::from_secs(3);
    let (c0, t0) = (redis.total_commands(), Instant::now());
    for chunk in tickets.chunks(500) {
        let polls: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let (client, url, t) = (
                    pool[k % 4].clone(),
                    format!("{api}/rooms/{room}/position"),
                    t.clone(),
                );
                tokio::spawn(async move {
                    client
                        .get(url)
                        .bearer_auth(t)
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .map(|_| ())
                })
            })
            .collect();
        for p in polls {
            if let Err(e) = p.await.unwrap() {
                panic!("a poll failed: {e:?}");
            }
        }
    }
    tokio::time::sleep(window.saturating_sub(t0.elapsed())).await;
    let polling_rate = (redis.total_commands() - c0) as f64 / t0.elapsed().as_secs_f64();

    // Open every stream; each counts the events it reads.
    let pid = node.child.id();
    let rss_before = rss_kib(pid);
    let events = Arc::new(
        (0..STREAMS)
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let messages = Arc::new(
        (0..STREAMS)
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let opened = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(
        (0..STREAMS)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect::<Vec<_>>(),
    );
    let mut readers = Vec::with_capacity(STREAMS);
    let mut connection = client.clone();
    for (i, ticket) in tickets.iter().enumerate() {
        if i % PER_CONNECTION == 0 {
            connection = h2();
        }
        let request = connection
            .get(format!("{api}/rooms/{room}/events"))
            .bearer_auth(ticket);
        let (events, messages, opened, ended) = (
            events.clone(),
            messages.clone(),
            opened.clone(),
            ended.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut r = request.send().await.unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            // An event split across two chunks is counted from the chunk that ends it.
            let mut carry = Vec::new();
            let mut first = true;
            while let Ok(Some(chunk)) = r.chunk().await {
                carry.extend_from_slice(&chunk);
                let Some(end) = carry.windows(2).rposition(|w| w == b"\n\n") else {
                    continue;
                };
                let done: Vec<u8> = carry.drain(..end + 2).collect();
                let places = done.windows(12).filter(|w| w == b"event: place").count();
                let told = done
                    .windows(16)
                    .filter(|w| w == b"Restock at 12:05")
                    .count();
                messages[i].fetch_add(told, Ordering::SeqCst);
                if places > 0 {
                    events[i].fetch_add(places, Ordering::SeqCst);
                    if first {
                        first = false;
                        opened.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            ended[i].store(true, Ordering::SeqCst);
        }));
        if i % 1_000 == 999 {
            tokio::task::yield_now().await;
        }
    }
    wait_until(
        Duration::from_secs(60),
        "every stream got its first event",
        || async { opened.load(Ordering::SeqCst) == STREAMS },
    )
    .await;
    let rss_after = rss_kib(pid);
    let per_stream = (rss_after.saturating_sub(rss_before) * 1024) as f64 / STREAMS as f64;

    // Redis commands per second with every stream open: the same work (refresh, pacer).
    let (c1, t1) = (redis.total_commands(), Instant::now());
    tokio::time::sleep(window).await;
    let open_rate = (redis.total_commands() - c1) as f64 / t1.elapsed().as_secs_f64();

    // An admission-rate change: twice the rate, every waiter's ETA halves. Every stream must
    // tell it within a second of the refresh (one a pacer admission ended meanwhile has
    // nothing more to tell).
    let before: Vec<usize> = events.iter().map(|e| e.load(Ordering::SeqCst)).collect();
    let changed_at = Instant::now();
    let r = client
        .post(format!("{admin_url}/admin/v1/rooms/{room}/settings"))
        .json(&serde_json::json!({ "admit_per_minute": 2 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    wait_until(
        Duration::from_secs(10),
        "every stream saw the change",
        || async {
            events
                .iter()
                .zip(&before)
                .zip(ended.iter())
                .all(|((e, b), gone)| e.load(Ordering::SeqCst) > *b || gone.load(Ordering::SeqCst))
        },
    )
    .await;
    let ended_early = ended.iter().filter(|e| e.load(Ordering::SeqCst)).count();
    assert!(ended_early <= 2, "{ended_early} streams ended");
    let reached_all = changed_at.elapsed();

    // One message change: every stream still open tells it (each waiter has the message in
    // its next place body).
    let told_at = Instant::now();
    let r = client
        .post(format!("{admin_url}/admin/v1/rooms/{room}/message"))
        .json(&serde_json::json!({ "message": "Restock at 12:05" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_until(
        Duration::from_secs(10),
        "every waiting stream told the message",
        || async {
            messages
                .iter()
                .zip(ended.iter())
                .all(|(m, gone)| m.load(Ordering::SeqCst) > 0 || gone.load(Ordering::SeqCst))
        },
    )
    .await;
    let message_all = told_at.elapsed();
    eprintln!(
        "{STREAMS} event streams (HTTP/2, {} connections): rushgate RSS {rss_before} KiB -> {rss_after} KiB ({per_stream:.0} B per open stream); \
         Redis {polling_rate:.0} commands/s with the waiters polling, {open_rate:.0} with them listening instead; \
         an admission-rate change reached the last stream {reached_all:?} after the admin call, a message change {message_all:?} (refresh 250 ms)",
        STREAMS / PER_CONNECTION
    );
    // A refresh (250 ms) plus a tick, plus a margin: this node and these 20,000 clients are
    // debug builds sharing two cores with whatever else the suite runs (alone: 1.6-1.8 s). The
    // release figure against the second-of-the-refresh target is `scripts/bench.sh`'s streams
    // row (50,000 streams: 0.56-0.71 s after the admin call).
    assert!(
        reached_all < Duration::from_millis(4_000),
        "{reached_all:?}"
    );
    assert!(
        message_all < Duration::from_millis(4_000),
        "{message_all:?}"
    );
    // The fan-out costs the store nothing: waiters that listen cost what polling ones do
    // (their liveness records), no command per stream or per event.
    assert!(
        open_rate <= polling_rate * 1.25 + 20.0,
        "Redis commands/s grew with the streams: {polling_rate:.0} polling -> {open_rate:.0} listening"
    );
    // The target, met even by the debug build (5.4 KiB; release 4.4 KiB): an HTTP/2
    // stream costs its task, its place state and h2's stream entry, no connection buffers.
    assert!(per_stream <= 8_192.0, "{per_stream:.0} B per stream");
    for r in readers {
        r.abort();
    }
}
