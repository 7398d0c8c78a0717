//! The accept loop: serves a bound listener with hyper-util's auto (HTTP/1 + HTTP/2) builder,
//! over TLS (ALPN `h2`, `http/1.1`) when configured, under connection rules a crowd or an
//! attacker cannot exhaust, and drains connections gracefully on shutdown.
//!
//! Guarantees, per connection:
//! - It is counted against its listener's cap from accept; one over the cap is closed at once
//!   (and counted), so accepts never stall behind a full listener and the kernel's backlog
//!   never fills with connections nobody will serve.
//! - It must deliver its first complete request head (TLS handshake included) within
//!   `head_timeout` of accept, whatever it sends meanwhile: a socket that stays silent, or
//!   trickles a head, is closed then.
//! - Between requests it may stay open `idle_timeout` after its last answer ended, whatever it
//!   sends meanwhile (HTTP/2 pings keep nothing alive); an HTTP/1.1 connection must also start
//!   its next head within `head_timeout` (hyper's header timer runs from when it goes idle).
//! - While an answer is being sent it is never cut for being slow to compute or for pauses of a
//!   streamed body (a shop's long download or event stream); it is cut when the client stops
//!   reading: its writes blocked with no progress for `idle_timeout`.
//! - A request body read by the JSON API must arrive within `body_timeout` of its head
//!   ([`BodyDeadline`], answered 408); the proxy streams bodies under its upstream timeouts.
//! - An upgraded connection (a WebSocket tunnel) leaves these rules: the tunnel has its own.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, Watched};
use super::body::{Body, BoxError};
use super::credentials::{BodyDeadline, PeerAddr};
use super::router;
use super::state::LiveState;
use crate::ops::metrics::{CONNECTIONS_CLOSED, CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// Which router a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Shopper traffic and the JSON API.
    Public,
    /// Probes, metrics and the admin API.
    Admin,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// How a listener treats its connections.
#[derive(Clone)]
pub struct ConnectionRules {
    /// Most connections open at once; more are closed at accept and counted.
    pub max_connections: usize,
    /// Accept to the end of the first request head, TLS handshake included.
    pub head_timeout: Duration,
    /// A JSON API request body must be complete this long after its head.
    pub body_timeout: Duration,
    /// No byte moved and no request being handled for this long: the connection is closed.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub grace: Duration,
    /// TLS on this listener (the acceptor reads the current certificate at each handshake).
    pub tls: Option<TlsAcceptor>,
}

/// Serves `listener` until `shutdown` flips, then stops accepting and gives in-flight requests
/// up to `rules.grace` to finish.
pub async fn serve(
    listener: TcpListener,
    kind: Listener,
    live: LiveState,
    mut shutdown: watch::Receiver<bool>,
    rules: ConnectionRules,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this when a kept-alive connection goes idle: every later head must be
        // complete within it. The first head is bounded from accept by the watchdog below.
        .header_read_timeout(rules.head_timeout)
        .max_buf_size(64 * 1024);
    // 200 requests at once per HTTP/2 connection (hyper's default, made ours): a browser's
    // tabs share one connection for their event streams; per-client and per-node stream caps
    // (src/http/events.rs) bound the rest.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(rules.max_connections));
    let rules = Arc::new(rules);
    let label = kind.label();
    let open = metrics::gauge!(CONNECTIONS_OPEN, "listener" => label);
    let refused = metrics::counter!(CONNECTIONS_REFUSED, "listener" => label);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE or a reset during the handshake: back off, keep serving.
                    tracing::warn!(error = %e, listener = label, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = Counted::open(&open);
        let connection = Connection {
            kind,
            live: live.clone(),
            rules: rules.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            peer,
            accepted: Instant::now(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop((open, permit));
        });
    }
    drop(listener);
    if tokio::time::timeout(rules.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = label,
            "shutdown grace period over; closing remaining connections"
        );
    }
}

/// Requests one HTTP/2 connection may carry at once.
pub const H2_MAX_STREAMS: u32 = 200;

/// One accepted connection and what it is served with.
struct Connection {
    kind: Listener,
    live: LiveState,
    rules: Arc<ConnectionRules>,
    builder: Arc<Builder<TokioExecutor>>,
    watcher: Watcher,
    peer: std::net::SocketAddr,
    accepted: Instant,
}

/// Why a connection was closed by its rules.
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeadTimeout,
    IdleTimeout,
    WriteStalled,
    TlsHandshake,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeadTimeout => "head_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::WriteStalled => "write_stalled",
            Closed::TlsHandshake => "tls_handshake",
        }
    }
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let (kind, peer) = (self.kind, self.peer);
        let activity = Arc::new(Activity::default());
        let stream = Watched::new(stream, activity.clone());
        let head_deadline = self.accepted + self.rules.head_timeout;
        let closed = match self.rules.tls.clone() {
            None => self.http(stream, &activity, false, head_deadline).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(head_deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.http(tls, &activity, true, head_deadline).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Some(Closed::TlsHandshake)
                    }
                    Err(_) => Some(Closed::HeadTimeout),
                }
            }
        };
        if let Some(reason) = closed {
            metrics::counter!(CONNECTIONS_CLOSED, "listener" => kind.label(), "reason" => reason.label())
                .increment(1);
        }
    }

    /// Serves HTTP on `io` until the client or a rule closes it; says which rule, if one did.
    async fn http<I>(
        self,
        io: I,
        io_activity: &Activity,
        tls: bool,
        head_deadline: Instant,
    ) -> Option<Closed>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let live = self.live.clone();
        let (kind, peer, body_timeout) = (self.kind, self.peer, self.rules.body_timeout);
        let requests = Arc::new(Requests::default());
        let seen = requests.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let busy = Busy::start(&seen);
            let ext = req.extensions_mut();
            ext.insert(PeerAddr(peer));
            ext.insert(BodyDeadline(Instant::now() + body_timeout));
            if tls {
                // Everything that asks "did the shopper use https" (Secure cookies, absolute
                // URLs, the shop's X-Forwarded-Proto) reads this header, as behind a balancer.
                req.headers_mut().insert(
                    http::header::HeaderName::from_static("x-forwarded-proto"),
                    http::HeaderValue::from_static("https"),
                );
            }
            // Each request runs on the state current when it arrived (reloads swap it whole).
            let state = live.load_full();
            // Boxed: over HTTP/2 every request is a task of its own, allocated at the size of
            // its largest state, and an event stream's task lives for minutes after its
            // answer; boxed, the router's state machine is freed once the answer is made.
            Box::pin(async move {
                let resp = match kind {
                    Listener::Public => router::public(state, req).await,
                    Listener::Admin => router::admin(state, req).await,
                };
                Ok::<_, Infallible>(busy.until_sent(resp))
            })
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = self.watcher.watch(conn);
        tokio::select! {
            ended = conn => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                None
            }
            reason = watchdog(&requests, io_activity, head_deadline, self.rules.idle_timeout) => Some(reason),
        }
    }
}

/// The requests of a connection, as the watchdog sees them.
#[derive(Default)]
struct Requests {
    /// Requests started (0: still before the first head).
    started: AtomicUsize,
    /// Requests whose answer is not completely handed to the connection yet.
    in_flight: AtomicUsize,
    /// A request started or ended since the watchdog last looked.
    changed: AtomicBool,
}

/// Marks a request as being answered while it lives.
struct Busy(Arc<Requests>);

impl Busy {
    fn start(requests: &Arc<Requests>) -> Busy {
        requests.started.fetch_add(1, Ordering::Relaxed);
        requests.in_flight.fetch_add(1, Ordering::Relaxed);
        requests.changed.store(true, Ordering::Relaxed);
        Busy(requests.clone())
    }

    /// `resp`, with this request counted as answered once its body is sent. A body that is in
    /// memory and small (every API answer) is as good as sent now; a streamed or large one
    /// (a proxied download, a shop's event stream) keeps the request busy until its last frame,
    /// so pauses of the shop never count as an idle connection.
    fn until_sent(self, resp: hyper::Response<Body>) -> hyper::Response<Body> {
        if resp
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= IN_MEMORY_BODY)
        {
            return resp;
        }
        resp.map(|inner| {
            Finishing {
                inner,
                busy: Some(self),
            }
            .boxed()
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.store(true, Ordering::Relaxed);
    }
}

/// Largest answer counted as sent when it is handed over (it fits the socket's buffers).
const IN_MEMORY_BODY: u64 = 64 * 1024;

/// A response body that ends its request's [`Busy`] with its last frame (or when dropped).
struct Finishing {
    inner: Body,
    busy: Option<Busy>,
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves when a rule closes the connection (see the module doc): no request head by
/// `head_deadline`; `idle` since the last answer ended with none in progress; or, while an
/// answer is being sent, writes blocked without progress for `idle`. Looks every quarter of
/// `idle`, so a rule fires between `idle` and 1.25 × `idle`.
async fn watchdog(
    requests: &Requests,
    io: &Activity,
    head_deadline: Instant,
    idle: Duration,
) -> Closed {
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut quiet_since = Instant::now();
    let mut stalled_since: Option<Instant> = None;
    loop {
        let before_head = requests.started.load(Ordering::Relaxed) == 0;
        let next = Instant::now() + tick;
        tokio::time::sleep_until(if before_head {
            next.min(head_deadline)
        } else {
            next
        })
        .await;
        let now = Instant::now();
        if requests.started.load(Ordering::Relaxed) == 0 {
            if now >= head_deadline {
                return Closed::HeadTimeout;
            }
            continue;
        }
        let wrote = io.take_wrote();
        if requests.changed.swap(false, Ordering::Relaxed) {
            quiet_since = now;
        }
        if requests.in_flight.load(Ordering::Relaxed) == 0 {
            stalled_since = None;
            if now.duration_since(quiet_since) >= idle {
                return Closed::IdleTimeout;
            }
            continue;
        }
        quiet_since = now;
        if wrote || !io.blocked() {
            stalled_since = None;
        } else if now.duration_since(*stalled_since.get_or_insert(now)) >= idle {
            return Closed::WriteStalled;
        }
    }
}

/// One open connection in the `rushgate_connections_open` gauge, for as long as it lives
/// (also when its task panics).
struct Counted(metrics::Gauge);

impl Counted {
    fn open(gauge: &metrics::Gauge) -> Counted {
        gauge.increment(1.0);
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
