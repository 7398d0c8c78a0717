//! Connections a crowd or an attacker cannot pile up: sockets that never send a byte and
//! request bodies that trickle are closed by their deadlines, while ordinary shoppers are served
//! quickly and the admin listener answers at once; a listener at its cap closes what is over it
//! and counts it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Sockets that never send a byte.
const SILENT: usize = 10_000;
/// Sockets that send a join's head and then its body a byte every 500 ms.
const TRICKLING: usize = 2_000;

/// A connection to `to`. (Each end of 12,000 loopback connections fits the ephemeral port
/// range of one source address; binding to others first costs a port search per socket.)
async fn connect_from(i: usize, to: SocketAddr) -> TcpStream {
    for attempt in 0.. {
        match TcpStream::connect(to).await {
            Ok(stream) => return stream,
            Err(e) if attempt < 20 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {i}: {e}"),
        }
    }
    unreachable!()
}

/// Waits until the server closes `stream` (EOF or reset); returns what it sent before.
async fn until_closed(mut stream: TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// The built binary serving one room (embedded store) in its own process, so the server's
/// 12,000 sockets and the test's 12,000 each fit one process's open-file limit. Killed on drop.
struct Node {
    child: std::process::Child,
    public: SocketAddr,
    admin: u16,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(room: &str, deadlines: u64) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (public, admin) = (free_port(), free_port());
        let config = dir.path().join("rushgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 head_timeout_seconds = {deadlines}\nbody_timeout_seconds = {deadlines}\n\
                 idle_timeout_seconds = {deadlines}\n\
                 [passes]\nsigning_key_file = \"{}\"\nticket_secret = \"connections-test-secret-0123\"\n\
                 [limits]\njoin_per_minute = 0\npoll_per_minute = 0\n\
                 [[rooms]]\nid = \"{room}\"\nadmit_per_minute = 60000\nmax_active = 100000\n",
                dir.path().join("key.pem").display()
            ),
        )
        .expect("write config");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_rushgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn rushgate");
        let node = Node {
            child,
            public: SocketAddr::from(([127, 0, 0, 1], public)),
            admin,
            client: reqwest::Client::new(),
            _dir: dir,
        };
        wait_until(Duration::from_secs(20), "the node is ready", || async {
            node.get_admin("/readyz").await.is_some()
        })
        .await;
        node
    }

    async fn get_admin(&self, path: &str) -> Option<String> {
        let r = self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.admin))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.text().await.ok()
    }

    async fn post(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("http://{}/_rushgate/v1/{path}", self.public));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    async fn get(&self, path: &str, bearer: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}/_rushgate/v1/{path}", self.public))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_while_shoppers_are_served() {
    let _heavy = SOCKET_HEAVY.lock().await;
    let id = room_id();
    let node = Node::start(&id, 6).await;
    let to = node.public;
    let closed_before = closed_total(&node, "head_timeout").await;

    // The silent ones, connected in waves; each reports how long after its connect it was
    // closed, and whether anything was sent to it.
    let started = Instant::now();
    let mut silent_waits = Vec::with_capacity(SILENT);
    for wave in 0..SILENT / 500 {
        let mut connected = Vec::with_capacity(500);
        for k in 0..500 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            connected.push(rx);
            silent_waits.push(tokio::spawn(async move {
                let s = connect_from(wave * 500 + k, to).await;
                let opened = Instant::now();
                let _ = tx.send(());
                let sent = until_closed(s, Duration::from_secs(30)).await;
                (sent, opened.elapsed())
            }));
        }
        // Each wave lands before the next: a burst beyond the listener's accept queue (1,024)
        // would leave clients that believe they are connected while the kernel still holds
        // their handshake (it completes, and the deadline starts, only on a SYN-ACK resend).
        for rx in connected {
            let _ = rx.await;
        }
    }
    let silent_open = Instant::now();

    // The trickling ones: a complete head, then the body a byte at a time.
    let timed_out = Arc::new(AtomicUsize::new(0));
    let head = format!(
        "POST /_rushgate/v1/rooms/{id}/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let mut trickling = Vec::with_capacity(TRICKLING);
    for i in 0..TRICKLING {
        let head = head.clone();
        let timed_out = timed_out.clone();
        let mut s = connect_from(SILENT + i, to).await;
        trickling.push(tokio::spawn(async move {
            let opened = Instant::now();
            s.write_all(head.as_bytes()).await.expect("head");
            let (mut r, mut w) = s.into_split();
            let mut answer = Vec::new();
            let reading = r.read_to_end(&mut answer);
            tokio::pin!(reading);
            loop {
                tokio::select! {
                    _ = &mut reading => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if w.write_all(b" ").await.is_err() {
                            let _ = tokio::time::timeout(Duration::from_secs(2), &mut reading).await;
                            break;
                        }
                    }
                }
                assert!(opened.elapsed() < Duration::from_secs(20), "a trickling body stays open");
            }
            if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408") {
                timed_out.fetch_add(1, Ordering::SeqCst);
            }
            opened.elapsed()
        }));
    }

    // While all of them are open: shoppers join and poll, the admin listener answers.
    let mut latencies = Vec::new();
    let mut admin = Vec::new();
    for _ in 0..150 {
        let t = Instant::now();
        let joined = node.post(&format!("rooms/{id}/join"), None).await;
        assert!(joined.status().is_success(), "join {}", joined.status());
        let joined: serde_json::Value = joined.json().await.expect("join body");
        latencies.push(t.elapsed());
        let ticket = joined["ticket"].as_str().expect("ticket");
        let t = Instant::now();
        let polled = node.get(&format!("rooms/{id}/position"), ticket).await;
        assert!(polled.status().is_success(), "poll {}", polled.status());
        let _ = polled.bytes().await;
        latencies.push(t.elapsed());
        let t = Instant::now();
        assert!(node.get_admin("/readyz").await.is_some(), "readyz answers");
        admin.push(t.elapsed());
    }
    let served_by = silent_open.elapsed();
    assert!(
        served_by < Duration::from_secs(6),
        "shoppers were measured while the silent sockets were open ({served_by:?})"
    );
    let (shop_p99, admin_p99) = (p99(latencies), p99(admin));
    eprintln!(
        "{SILENT} silent + {TRICKLING} trickling open (connected in {:?}): joins and polls p99 {shop_p99:?}, readyz p99 {admin_p99:?}",
        silent_open - started
    );
    assert!(
        shop_p99 < Duration::from_millis(50),
        "joins/polls p99 {shop_p99:?}"
    );
    assert!(
        admin_p99 < Duration::from_millis(50),
        "readyz p99 {admin_p99:?}"
    );

    // Every silent socket is closed by the head deadline (6 s from accept), none before it.
    let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
    for w in silent_waits {
        let (sent, after) = w.await.unwrap();
        let sent = sent.expect("a silent socket was closed within 30 s");
        assert!(
            sent.is_empty(),
            "nothing is sent to a silent socket: {sent}"
        );
        first = first.min(after);
        last = last.max(after);
    }
    assert!(
        first >= Duration::from_millis(5_900) && last < Duration::from_secs(6 + 4),
        "silent sockets closed {first:?} to {last:?} after their connect (deadline 6 s)"
    );
    let all_closed = last;
    // Every trickling body is answered 408 at its deadline (6 s from its head) and closed.
    let mut slowest = Duration::ZERO;
    for t in trickling {
        slowest = slowest.max(t.await.unwrap());
    }
    assert_eq!(timed_out.load(Ordering::SeqCst), TRICKLING);
    assert!(
        slowest < Duration::from_secs(6 + 4),
        "slowest trickle {slowest:?}"
    );
    eprintln!(
        "silent sockets closed {first:?} to {all_closed:?} after their connect; slowest trickling body {slowest:?}"
    );
    let counted = closed_total(&node, "head_timeout").await - closed_before;
    // At least every silent socket (a client connection of this test may add one).
    assert!(counted >= SILENT as u64, "{counted} head timeouts counted");
    // What stays open are the test client's own kept-alive connections, until they idle out.
    wait_until(
        Duration::from_secs(20),
        "the public listener is back to idle",
        || async { gauge(&node, "rushgate_connections_open", "public").await <= 1.0 },
    )
    .await;
}

/// A sample of `name` with `listener="{listener}"`, read from the node's `/metrics`.
async fn gauge(node: &Node, name: &str, listener: &str) -> f64 {
    let text = node.get_admin("/metrics").await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("listener=\"{listener}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// `rushgate_connections_closed_total{listener="public",reason}` now.
async fn closed_total(node: &Node, reason: &str) -> u64 {
    let text = node.get_admin("/metrics").await.unwrap_or_default();
    text.lines()
        .find(|l| {
            l.starts_with("rushgate_connections_closed_total")
                && l.contains("listener=\"public\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_refuses_and_counts_while_the_admin_listener_answers() {
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    c.server.max_connections = 50;
    let app = spawn_app(c).await;
    let to = app.app.as_ref().unwrap().public_addr;
    let refused = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("rushgate_connections_refused_total")
                    && l.contains("listener=\"public\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = refused(&app.metrics_text().await);
    let mut held = Vec::new();
    for i in 0..50 {
        held.push(connect_from(i, to).await);
    }
    // The 51st is closed at once, without an answer.
    let extra = connect_from(51, to).await;
    let sent = until_closed(extra, Duration::from_secs(5))
        .await
        .expect("closed at once");
    assert!(sent.is_empty());
    let ready = app.admin_get("/readyz").await;
    assert!(ready.status.is_success());
    let after = refused(&app.metrics_text().await);
    assert!(
        after - before >= 1.0,
        "refusals counted: {before} -> {after}"
    );
    // Room again once one closes.
    drop(held.pop());
    wait_until(Duration::from_secs(5), "a join is served again", || async {
        let r = reqwest::Client::new()
            .post(app.api(&format!("rooms/{id}/join")))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    })
    .await;
    app.stop().await;
}

/// HTTP/2 pings keep nothing alive: a connection with no request in progress is closed after
/// `idle_timeout_seconds` however often the client pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_whatever_it_pings() {
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    c.server.idle_timeout_seconds = 1;
    let app = spawn_app(c).await;
    let stream = TcpStream::connect(app.app.as_ref().unwrap().public_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
    let ended = tokio::spawn(conn);
    let req = http::Request::get(format!("/_rushgate/v1/rooms/{id}"))
        .header("host", "x")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert!(resp.status().is_success());
    drop(resp);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the server closed the pinging idle connection")
        .unwrap()
        .ok();
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed {after:?} after its last answer (idle 1 s, pings every 100 ms)"
    );
    app.stop().await;
}
