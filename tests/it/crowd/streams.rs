//! Event streams at crowd scale, against the built binary on a private redis-server: thousands
//! of waiters each hold an open stream; one room change reaches every stream within a second of
//! the refresh; the node's memory per open stream is measured; Redis commands per second do not
//! grow with the number of streams (the fan-out is one watch per room, not a store call per
//! stream).
//!
//! The count is what one process may hold on this machine: the hard open-file limit is 20,000
//! and cannot be raised without CAP_SYS_RESOURCE, and the node needs one descriptor per stream.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RedisServer;
use crate::harness::{free_port, room_id, wait_until};

/// Streams held open at once: the test's own end of each is in this process, beside the other
/// tests running meanwhile, all under the same 20,000 descriptors (see the module doc). 10,000:
/// with 15,000 a debug-build node and client on two busy cores took 1.2-2.5 s, too close to the
/// bound below to be a steady check; the release figure (8,000 streams) is bench.sh's row.
const STREAMS: usize = 10_000;

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
async fn thousands_of_streams_see_one_room_change_within_a_second() {
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
             [[rooms]]\nid = \"{room}\"\nadmit_per_minute = 60000\nmax_active = 1\n\
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
    let client = reqwest::Client::new();
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

    // One admitted shopper fills the room; everyone after waits.
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
    let mut tickets = Vec::with_capacity(STREAMS);
    for wave in 0..STREAMS / 500 {
        let joins: Vec<_> = (0..500)
            .map(|_| tokio::spawn(join(client.clone(), api.clone(), room.clone())))
            .collect();
        for j in joins {
            tickets.push(j.await.unwrap());
        }
        let _ = wave;
    }

    // Redis commands per second with no stream open and every waiter polling once in the
    // window (a poller's cadence): the liveness records a waiter costs either way.
    let window = Duration::from_secs(3);
    let (c0, t0) = (redis.total_commands(), Instant::now());
    for chunk in tickets.chunks(500) {
        let polls: Vec<_> = chunk
            .iter()
            .map(|t| {
                let (client, url, t) = (
                    client.clone(),
                    format!("{api}/rooms/{room}/position"),
                    t.clone(),
                );
                tokio::spawn(async move { client.get(url).bearer_auth(t).send().await.is_ok() })
            })
            .collect();
        for p in polls {
            assert!(p.await.unwrap());
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
    let opened = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::with_capacity(STREAMS);
    for (i, ticket) in tickets.iter().enumerate() {
        let request = format!(
            "GET /_rushgate/v1/rooms/{room}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ticket}\r\n\r\n"
        );
        let (events, opened) = (events.clone(), opened.clone());
        let mut stream = TcpStream::connect(("127.0.0.1", node.public))
            .await
            .unwrap();
        readers.push(tokio::spawn(async move {
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut buf = [0u8; 2048];
            let mut first = true;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let got = &buf[..n];
                        let places = got.windows(12).filter(|w| w == b"event: place").count();
                        if places > 0 {
                            events[i].fetch_add(places, Ordering::SeqCst);
                            if first {
                                first = false;
                                opened.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            }
        }));
        if i % 1_000 == 999 {
            // Let the node accept the wave (its backlog holds 4,096).
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

    // One room change: a second session slot; the next tick admits the head, and every
    // waiter's position moves. Every stream must tell it within a second of the refresh.
    let before: Vec<usize> = events.iter().map(|e| e.load(Ordering::SeqCst)).collect();
    let changed_at = Instant::now();
    let r = client
        .post(format!("{admin_url}/admin/v1/rooms/{room}/settings"))
        .json(&serde_json::json!({ "max_active": 2 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_until(
        Duration::from_secs(10),
        "every stream saw the change",
        || async {
            events
                .iter()
                .zip(&before)
                .all(|(e, b)| e.load(Ordering::SeqCst) > *b)
        },
    )
    .await;
    let reached_all = changed_at.elapsed();
    eprintln!(
        "{STREAMS} event streams: rushgate RSS {rss_before} KiB -> {rss_after} KiB ({per_stream:.0} B per open stream); \
         Redis {polling_rate:.0} commands/s with the waiters polling, {open_rate:.0} with them listening instead; \
         a room change reached the last stream {reached_all:?} after the admin call (refresh 250 ms)"
    );
    // A refresh (250 ms) plus a tick, plus two seconds: this node and these 10,000 clients are
    // debug builds sharing two cores. The release figure, against the
    // second-of-the-refresh target, is `scripts/bench.sh`'s streams row.
    assert!(
        reached_all < Duration::from_millis(2_500),
        "{reached_all:?}"
    );
    // The fan-out costs the store nothing: waiters that listen cost what polling ones do
    // (their liveness records), no command per stream or per event.
    assert!(
        open_rate <= polling_rate * 1.25 + 20.0,
        "Redis commands/s grew with the streams: {polling_rate:.0} polling -> {open_rate:.0} listening"
    );
    // The debug build's figure (release futures and buffers are smaller); a regression guard,
    // not the 8 KB target, which is measured on the release build.
    assert!(per_stream <= 65_536.0, "{per_stream:.0} B per stream");
    for r in readers {
        r.abort();
    }
}
