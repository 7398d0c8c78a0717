//! A real upstream shop for proxy tests: a hyper server on a free port that records every request
//! it gets, checks every `Rushgate-Pass` with the rushgate pass verifier, and offers streaming
//! endpoints that prove bodies are not buffered whole.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rushgate::pass::PassIssuer;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Size of each chunk the download endpoint sends.
pub const CHUNK: usize = 64 * 1024;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    /// `sub` of a valid `Rushgate-Pass`.
    pub pass_sub: Option<String>,
}

#[derive(Default)]
pub struct Shared {
    pub seen: Mutex<Vec<Seen>>,
    /// Verifies `Rushgate-Pass` (set once rushgate is running) and the room it must be for.
    pub verifier: OnceLock<(PassIssuer, String)>,
    /// Requests under `/products` without a valid pass, or with an invalid one.
    pub bad_passes: AtomicU64,
    /// Signalled when `/upload` has received its first chunk.
    pub upload_started: Notify,
    /// `/download` sends its first chunk, then waits for this before the rest.
    pub download_release: Notify,
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Notified to close every open connection at once (as a shop's keep-alive timeout does).
    pub close_all: Notify,
    /// Requests to `/hangup`, which closes every connection without answering.
    pub hangups: AtomicU64,
    /// TLS handshakes that failed (an HTTPS shop whose certificate the client refused).
    pub tls_failures: AtomicU64,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Serves HTTPS (its certificate names 127.0.0.1 and localhost).
    tls: bool,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::start_with(None).await
    }

    /// The same shop over HTTPS with `acceptor`'s certificate; failed handshakes are counted
    /// in `Shared::tls_failures`.
    pub async fn start_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let tls = acceptor.is_some();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_shop(s, stream).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve_shop(s, stream).await,
                            Err(_) => {
                                s.tls_failures.fetch_add(1, Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        Upstream {
            addr,
            shared,
            task,
            tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    pub fn set_verifier(&self, passes: PassIssuer, room: &str) {
        let _ = self.shared.verifier.set((passes, room.to_string()));
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn bad_passes(&self) -> u64 {
        self.shared.bad_passes.load(Ordering::SeqCst)
    }
}

/// A WebSocket echo endpoint (any path ending in `/ws`): answers the handshake with 101 and
/// sends every text or binary message back until the client closes.
fn echo_socket(mut req: Request<Incoming>) -> Response<Body> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut resp = Response::new(text("not a websocket handshake".into()));
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        return resp;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
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
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(text(String::new()))
        .expect("101")
}

/// Serves the shop on one connection until it ends or `close_all` fires.
async fn serve_shop<S>(s: Arc<Shared>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let closed = s.close_all.notified();
    let shared = s.clone();
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // Dropping the connection closes its socket.
    tokio::select! {
        _ = conn => {}
        _ = closed => {}
    }
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let pass_sub = match (req.headers().get("rushgate-pass"), s.verifier.get()) {
        (Some(token), Some((passes, room))) => {
            match passes.verify_for_room(token.to_str().unwrap_or(""), room) {
                Ok(claims) => Some(claims.sub.clone()),
                Err(_) => {
                    s.bad_passes.fetch_add(1, Ordering::SeqCst);
                    None
                }
            }
        }
        _ => None,
    };
    if req.uri().path().starts_with("/products") && pass_sub.is_none() {
        s.bad_passes.fetch_add(1, Ordering::SeqCst);
    }
    s.seen.lock().expect("lock").push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
        pass_sub,
    });
    let path = req.uri().path().to_string();
    if path.ends_with("/ws") {
        return Ok(echo_socket(req));
    }
    let resp = match path.as_str() {
        // Never answers: the connection is closed under the request (a shop that crashed).
        "/hangup" => {
            s.hangups.fetch_add(1, Ordering::SeqCst);
            s.close_all.notify_waiters();
            std::future::pending::<()>().await;
            unreachable!("the connection is dropped first")
        }
        // Answers, then closes the connection.
        "/close" => {
            let mut resp = Response::new(text("closing".to_string()));
            resp.headers_mut()
                .insert("connection", "close".parse().expect("hv"));
            resp
        }
        // The shop logs the shopper out and tells rushgate to end the session.
        "/products/logout" | "/logout" => {
            let mut resp = Response::new(text("bye".to_string()));
            resp.headers_mut()
                .insert("rushgate-session", "end".parse().expect("hv"));
            resp
        }
        "/empty" => {
            let mut resp = Response::new(text(String::new()));
            *resp.status_mut() = http::StatusCode::NO_CONTENT;
            resp
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0usize;
            let mut first = true;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    if first && total > 0 {
                        first = false;
                        s.upload_started.notify_one();
                    }
                }
            }
            Response::new(text(format!("received {total}")))
        }
        "/download" => {
            let total: usize = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(CHUNK * 4);
            let chunks = total.div_ceil(CHUNK);
            let s2 = s.clone();
            let stream = futures::stream::unfold(0usize, move |i| {
                let s2 = s2.clone();
                async move {
                    if i >= chunks {
                        return None;
                    }
                    if i == 1 {
                        s2.download_release.notified().await;
                    }
                    let len = CHUNK.min(total - i * CHUNK);
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len]))),
                        i + 1,
                    ))
                }
            });
            Response::new(StreamBody::new(stream).boxed())
        }
        _ => {
            let mut resp = Response::new(text(format!("upstream:{}", req.uri())));
            let h = resp.headers_mut();
            h.insert("x-upstream", "yes".parse().expect("hv"));
            h.insert("connection", "x-hop-resp".parse().expect("hv"));
            h.insert("x-hop-resp", "1".parse().expect("hv"));
            h.insert("keep-alive", "timeout=5".parse().expect("hv"));
            h.insert(
                "set-cookie",
                "shop_session=abc; Path=/".parse().expect("hv"),
            );
            resp
        }
    };
    Ok(resp)
}
