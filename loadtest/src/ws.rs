//! WebSocket rows of the benchmark: `baseline ws-echo` (a hyper server that echoes every
//! message, the shop of the row) and `ws` (a load generator: connections that each send their
//! messages back to back while reading the echoes, reporting round trips per second), so
//! messages through rushgate's tunnel are compared with the echo server reached directly, in
//! the same run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// `baseline ws-echo`: answers every WebSocket handshake on any path and echoes text and
/// binary messages until the client closes.
pub async fn echo(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handshake))
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

async fn handshake(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"websocket only")));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", http::HeaderValue::from_static("websocket"));
    h.insert("connection", http::HeaderValue::from_static("upgrade"));
    if let Ok(v) = http::HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    Ok(resp)
}

/// `ws`: what to run.
#[derive(clap::Args)]
pub struct WsArgs {
    /// Where to connect (rushgate's public listener, or the echo server directly).
    #[arg(long)]
    target: SocketAddr,
    /// Path of the WebSocket.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Connections at once.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Messages each connection sends (and reads back).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Name of the run (its JSON file in `--out`).
    #[arg(long, default_value = "ws")]
    name: String,
    /// Directory for the JSON result.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `args` and writes `{name, conns, messages, seconds, messages_per_s}` to
/// `<out>/<name>.json`; every echo is checked to be the message sent, in order.
pub async fn run(args: WsArgs) -> anyhow::Result<bool> {
    let mut sockets = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let req = format!("ws://{}{}", args.target, args.path).into_client_request()?;
        let stream = TcpStream::connect(args.target).await?;
        let _ = stream.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
        sockets.push(ws);
    }
    let payload = "x".repeat(args.size);
    let started = Instant::now();
    let runs: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            let (payload, messages) = (payload.clone(), args.messages);
            tokio::spawn(async move {
                let (mut tx, mut rx) = ws.split();
                let size = payload.len();
                let writer = tokio::spawn(async move {
                    for _ in 0..messages {
                        tx.feed(Message::text(payload.clone())).await?;
                    }
                    tx.flush().await?;
                    Ok::<_, anyhow::Error>(tx)
                });
                for _ in 0..messages {
                    match rx.next().await {
                        Some(Ok(m)) if m.len() == size => {}
                        other => anyhow::bail!("unexpected echo: {other:?}"),
                    }
                }
                let mut tx = writer.await??;
                let _ = tx.close().await;
                Ok(())
            })
        })
        .collect();
    for r in runs {
        r.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = args.conns * args.messages;
    let per_s = total as f64 / seconds;
    println!(
        "{}: {} connections x {} messages of {} B echoed in {seconds:.2} s: {per_s:.0} messages/s",
        args.name, args.conns, args.messages, args.size
    );
    let out = crate::out_dir(&args.out);
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join(format!("{}.json", args.name)),
        serde_json::json!({
            "name": args.name,
            "conns": args.conns,
            "messages": total,
            "seconds": seconds,
            "messages_per_s": per_s,
        })
        .to_string(),
    )?;
    Ok(true)
}
