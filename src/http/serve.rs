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
//!   trickles a head, is closed then. hyper's own header timer starts only at the first byte.
//! - Afterwards it is closed once no byte moved either way for `idle_timeout` while no request
//!   of it is being handled (an idle keep-alive connection, or a client that stopped reading
//!   its answer). A request whose handler is still working is never cut by this rule.
//! - A request body read by the JSON API must arrive within `body_timeout` of its head
//!   ([`BodyDeadline`], answered 408); the proxy streams bodies under its upstream timeouts.
//! - An upgraded connection (a WebSocket tunnel) leaves these rules: the tunnel has its own.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

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
        // Bounds every later head of a kept-alive connection from its first byte; the first
        // head is bounded from accept by the watchdog below.
        .header_read_timeout(rules.head_timeout)
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new());
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
        open.increment(1.0);
        let open = open.clone();
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
            open.decrement(1.0);
            drop(permit);
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
    TlsHandshake,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeadTimeout => "head_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::TlsHandshake => "tls_handshake",
        }
    }
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let (kind, peer) = (self.kind, self.peer);
        let activity = Arc::new(Activity::default());
        let stream = Counted {
            inner: stream,
            activity: activity.clone(),
        };
        let head_deadline = self.accepted + self.rules.head_timeout;
        let closed = match self.rules.tls.clone() {
            None => self.http(stream, activity, false, head_deadline).await,
            Some(acceptor) => {
                match tokio::time::timeout_at(head_deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.http(tls, activity, true, head_deadline).await,
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
        activity: Arc<Activity>,
        tls: bool,
        head_deadline: Instant,
    ) -> Option<Closed>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let live = self.live.clone();
        let (kind, peer, body_timeout) = (self.kind, self.peer, self.rules.body_timeout);
        let seen = activity.clone();
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
            async move {
                let resp = match kind {
                    Listener::Public => router::public(state, req).await,
                    Listener::Admin => router::admin(state, req).await,
                };
                drop(busy);
                Ok::<_, Infallible>(resp)
            }
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
            reason = watchdog(&activity, head_deadline, self.rules.idle_timeout) => Some(reason),
        }
    }
}

/// What the watchdog sees of a connection.
#[derive(Default)]
struct Activity {
    /// A byte was read or written since the watchdog last looked.
    moved: AtomicBool,
    /// Requests started on the connection (0: still before the first head).
    started: AtomicUsize,
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
}

/// Marks a request as being handled while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Busy {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.moved.store(true, Ordering::Relaxed);
    }
}

/// Resolves when a rule closes the connection: no request head by `head_deadline`, or
/// `idle` without a byte moving while no request is being handled. Looks every quarter of
/// `idle` (so an idle connection is closed between `idle` and 1.25 × `idle`).
async fn watchdog(activity: &Activity, head_deadline: Instant, idle: Duration) -> Closed {
    tokio::time::sleep_until(head_deadline).await;
    if activity.started.load(Ordering::Relaxed) == 0 {
        return Closed::HeadTimeout;
    }
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        if activity.moved.swap(false, Ordering::Relaxed)
            || activity.in_flight.load(Ordering::Relaxed) > 0
        {
            quiet_since = now;
        } else if now.duration_since(quiet_since) >= idle {
            return Closed::IdleTimeout;
        }
    }
}

/// A socket that notes when bytes move, for the watchdog (one relaxed store per read or
/// write; no clock read).
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
