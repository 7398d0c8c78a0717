//! The event-stream row of the benchmark: `streams` fills a room with waiters (one admitted
//! shopper holds its only slot), opens one server-sent event stream per waiter, then changes the
//! room twice through the admin API, a second session slot (every waiter's position moves) and
//! a new message, and measures for each change the time from the admin call until the last
//! stream has its event, the node's CPU per delivered event, and the node's memory per open
//! stream. With `--http2` (the bench row) the streams are HTTP/2 streams, up to 200 on each
//! connection (the node's limit per connection), as a browser over HTTPS carries every tab's
//! `EventSource` on one connection: tens of thousands of streams take a few hundred
//! descriptors. Without it, every stream is an HTTP/1.1 connection of its own, from several
//! 127.0.0.x source addresses so ephemeral ports never run out; the count is then bounded by
//! the open-file limit of this process and of the node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::runs::{cpu_seconds, rss_bytes};

/// Whether a refused stream was reported (the first one is).
static REFUSED: AtomicBool = AtomicBool::new(false);

/// `streams` arguments.
#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// rushgate's public listener.
    #[arg(long)]
    target: SocketAddr,
    /// rushgate's admin listener.
    #[arg(long)]
    admin: SocketAddr,
    /// The room (one with `max_active = 1` and a long idle timeout, so the waiters stay).
    #[arg(long)]
    room: String,
    /// Streams to hold open at once.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// The node's pid, for its memory and CPU.
    #[arg(long)]
    pid: u32,
    /// Source addresses to spread the streams over (127.0.0.1 ..).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Carry the streams (and the joins) as HTTP/2 streams over few connections (prior
    /// knowledge, as the node serves HTTP/2 without TLS too).
    #[arg(long)]
    http2: bool,
    /// With `--http2`: streams per connection (at most the node's 200).
    #[arg(long, default_value_t = 200)]
    per_connection: usize,
    /// Name of the run (its JSON file in `--out`).
    #[arg(long, default_value = "streams")]
    name: String,
    /// Directory for the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One HTTP/1.1 exchange on a fresh connection; the body of a 2xx answer.
async fn call(to: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(to).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 2") {
        bail!("{method} {path}: {head}");
    }
    Ok(rest.to_string())
}

/// A new place in `room`: its ticket.
async fn join(to: SocketAddr, room: &str) -> anyhow::Result<String> {
    let body = call(
        to,
        "POST",
        &format!("/_rushgate/v1/rooms/{room}/join"),
        "{}",
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&body).context("join body")?;
    Ok(v["ticket"].as_str().context("no ticket")?.to_string())
}

/// One HTTP/2 connection (prior knowledge) from `source`: its request handle.
async fn h2_connect(to: SocketAddr, source: IpAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A request on an HTTP/2 connection (`path` on the node, `ticket` as bearer).
fn h2_request(
    method: &str,
    path: &str,
    ticket: Option<&str>,
    body: &'static str,
) -> anyhow::Result<http::Request<Full<Bytes>>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://bench{path}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = ticket {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    Ok(req.body(Full::new(Bytes::from_static(body.as_bytes())))?)
}

/// A new place in `room` over an HTTP/2 connection: its ticket.
async fn h2_join(mut send: SendRequest<Full<Bytes>>, room: String) -> anyhow::Result<String> {
    send.ready().await?;
    let req = h2_request(
        "POST",
        &format!("/_rushgate/v1/rooms/{room}/join"),
        None,
        "{}",
    )?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("join: {status} {}", String::from_utf8_lossy(&body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("join body")?;
    Ok(v["ticket"].as_str().context("no ticket")?.to_string())
}

/// Finds the `event: place` markers of one stream across the chunks it reads (a marker may be
/// split between two).
struct Marks {
    carry: Vec<u8>,
    first: bool,
}

impl Marks {
    const MARK: &'static [u8] = b"event: place";

    fn new() -> Self {
        Marks {
            carry: Vec::new(),
            first: true,
        }
    }

    /// Counts the markers `data` completes and records them for stream `i`.
    fn feed(&mut self, seen: &Seen, i: usize, data: &[u8]) {
        self.carry.extend_from_slice(data);
        let places = self
            .carry
            .windows(Self::MARK.len())
            .filter(|w| *w == Self::MARK)
            .count();
        let keep = (Self::MARK.len() - 1).min(self.carry.len());
        self.carry.drain(..self.carry.len() - keep);
        if places > 0 {
            let at = seen.start.elapsed().as_nanos() as u64;
            seen.last_event_ns.fetch_max(at, Ordering::SeqCst);
            seen.events[i].fetch_add(places, Ordering::SeqCst);
            if self.first {
                self.first = false;
                seen.opened.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Opens stream `i` for `ticket` as an HTTP/2 stream on `send` and counts its events until the
/// node ends it.
async fn h2_stream(
    mut send: SendRequest<Full<Bytes>>,
    room: String,
    ticket: String,
    seen: Arc<Seen>,
    i: usize,
) {
    let refused = |what: String| {
        if !REFUSED.swap(true, Ordering::SeqCst) {
            eprintln!("streams: a stream was refused: {what}");
        }
    };
    let opened = async {
        send.ready().await?;
        let req = h2_request(
            "GET",
            &format!("/_rushgate/v1/rooms/{room}/events"),
            Some(&ticket),
            "",
        )?;
        anyhow::Ok(send.send_request(req).await?)
    }
    .await;
    match opened {
        Ok(resp) if resp.status() == http::StatusCode::OK => {
            let mut body = resp.into_body();
            let mut marks = Marks::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    marks.feed(&seen, i, data);
                }
            }
        }
        Ok(resp) => refused(format!("{}", resp.status())),
        Err(e) => refused(format!("{e:#}")),
    }
    seen.ended[i].store(true, Ordering::SeqCst);
}

/// Counters every reader shares: events per stream, and when (ns after `start`) the latest
/// event of each change arrived.
struct Seen {
    start: Instant,
    events: Vec<AtomicUsize>,
    /// Streams the node ended (an admitted waiter's, after its admission).
    ended: Vec<AtomicBool>,
    last_event_ns: AtomicU64,
    opened: AtomicUsize,
}

/// Runs `args` and writes the figures to `<out>/<name>.json`.
pub async fn run(args: StreamsArgs) -> anyhow::Result<()> {
    let n = args.streams;
    eprintln!("streams: {n} waiters join {}", args.room);
    join(args.target, &args.room)
        .await
        .context("the blocker's join")?;
    let source = |i: usize| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % usize::from(args.sources.max(1))) as u8,
        ))
    };
    let mut tickets = Vec::with_capacity(n);
    // Over HTTP/2 the joins share a few connections (tens of thousands of short connections
    // would leave as many ports in TIME_WAIT).
    let mut joiners = Vec::new();
    if args.http2 {
        for c in 0..4 {
            joiners.push(h2_connect(args.target, source(c)).await?);
        }
    }
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|&k| {
                let (to, room) = (args.target, args.room.clone());
                let h2 = joiners.get(k % joiners.len().max(1)).cloned();
                tokio::spawn(async move {
                    match h2 {
                        Some(send) => h2_join(send, room).await,
                        None => join(to, &room).await,
                    }
                })
            })
            .collect();
        for j in joins {
            tickets.push(j.await??);
        }
    }
    drop(joiners);

    let rss_before = rss_bytes(args.pid).unwrap_or(0);
    let seen = Arc::new(Seen {
        start: Instant::now(),
        events: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        ended: (0..n).map(|_| AtomicBool::new(false)).collect(),
        last_event_ns: AtomicU64::new(0),
        opened: AtomicUsize::new(0),
    });
    let per_connection = args.per_connection.clamp(1, 200);
    if args.http2 {
        eprintln!(
            "streams: opening {n} HTTP/2 streams on {} connections from {} source addresses",
            n.div_ceil(per_connection),
            args.sources
        );
    } else {
        eprintln!(
            "streams: opening {n} streams from {} source addresses",
            args.sources
        );
    }
    let mut h2 = None;
    for (i, ticket) in tickets.iter().enumerate() {
        if args.http2 {
            if i % per_connection == 0 {
                h2 = Some(h2_connect(args.target, source(i / per_connection)).await?);
            }
            let send = h2.clone().context("an HTTP/2 connection")?;
            tokio::spawn(h2_stream(
                send,
                args.room.clone(),
                ticket.clone(),
                seen.clone(),
                i,
            ));
            if i % 1_000 == 999 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            continue;
        }
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source(i), 0))?;
        let mut stream = socket.connect(args.target).await?;
        let request = format!(
            // `close`: a stream the node ends (an admitted waiter's) closes its connection, so
            // the reader learns it ended.
            "GET /_rushgate/v1/rooms/{}/events HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nAuthorization: Bearer {ticket}\r\n\r\n",
            args.room
        );
        stream.write_all(request.as_bytes()).await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut marks = Marks::new();
            let mut head = true;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        seen.ended[i].store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(got) => {
                        if head
                            && !buf.starts_with(b"HTTP/1.1 200")
                            && !REFUSED.swap(true, Ordering::SeqCst)
                        {
                            eprintln!(
                                "streams: a stream was refused: {}",
                                String::from_utf8_lossy(&buf[..got.min(400)])
                            );
                        }
                        head = false;
                        marks.feed(&seen, i, &buf[..got]);
                    }
                }
            }
        });
        if i % 1_000 == 999 {
            // Let the node take the wave off its accept queue.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.opened.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} streams opened",
                seen.opened.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Settle: the node's allocator and buffers after the burst of opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_bytes(args.pid).unwrap_or(0);
    let per_stream = rss_after.saturating_sub(rss_before) as f64 / n as f64;

    let admin = args.admin;
    let room = args.room.clone();
    let change = |path: String, body: String| async move {
        call(admin, "POST", &path, &body).await.map(|_| ())
    };
    let slot = measure(&seen, args.pid, n, || {
        change(
            format!("/admin/v1/rooms/{room}/settings"),
            r#"{"max_active": 2}"#.to_string(),
        )
    })
    .await?;
    let message = measure(&seen, args.pid, n, || {
        change(
            format!("/admin/v1/rooms/{room}/message"),
            r#"{"message": "Restock at 12:05"}"#.to_string(),
        )
    })
    .await?;
    let result = serde_json::json!({
        "name": args.name,
        "streams": n,
        "http2": args.http2,
        "connections": if args.http2 { n.div_ceil(per_connection) } else { n },
        "rss_bytes_before": rss_before,
        "rss_bytes_after": rss_after,
        "rss_bytes_per_stream": per_stream,
        "slot_change": slot,
        "message_change": message,
    });
    eprintln!("{result}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{}.json", args.name)),
            serde_json::to_vec_pretty(&result)?,
        )?;
    }
    Ok(())
}

/// One room change made by `change`: ms from the call until the last stream had an event, and
/// the node's CPU (user + system) per delivered event over that time.
async fn measure<F, Fut>(
    seen: &Seen,
    pid: u32,
    n: usize,
    change: F,
) -> anyhow::Result<serde_json::Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // Streams still open: those of waiters admitted earlier have ended (a second's settle lets
    // an admitted stream's end arrive after its last event).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open: Vec<usize> = (0..n)
        .filter(|&i| !seen.ended[i].load(Ordering::SeqCst))
        .collect();
    let before: Vec<usize> = seen
        .events
        .iter()
        .map(|e| e.load(Ordering::SeqCst))
        .collect();
    let cpu0 = cpu_seconds(pid).unwrap_or_default();
    let called = seen.start.elapsed();
    change().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // A stream that ends meanwhile (its waiter admitted) has nothing more to receive.
        let done = open
            .iter()
            .filter(|&&i| {
                seen.events[i].load(Ordering::SeqCst) > before[i]
                    || seen.ended[i].load(Ordering::SeqCst)
            })
            .count();
        if done == open.len() {
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<(usize, usize, bool)> = open
                .iter()
                .filter(|&&i| seen.events[i].load(Ordering::SeqCst) <= before[i])
                .map(|&i| {
                    let e = seen.events[i].load(Ordering::SeqCst);
                    (i, e, seen.ended[i].load(Ordering::SeqCst))
                })
                .take(5)
                .collect();
            bail!(
                "only {done} of {} open streams saw the change; (stream, events, ended) without it: {missing:?}",
                open.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu1 = cpu_seconds(pid).unwrap_or_default();
    let last = Duration::from_nanos(seen.last_event_ns.load(Ordering::SeqCst));
    let to_last_ms = last.saturating_sub(called).as_secs_f64() * 1e3;
    let cpu_us = ((cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1)) * 1e6;
    Ok(serde_json::json!({
        "streams_open": open.len(),
        "to_last_stream_ms": to_last_ms,
        "node_cpu_us_per_event": cpu_us / open.len().max(1) as f64,
    }))
}
