//! Kept-alive HTTP/1.1 connections to one upstream (over TLS for an `https://` shop), on
//! hyper's connection API.
//!
//! Why not hyper-util's pooled client: measured in `scripts/bench.sh`, that client alone (bare
//! hyper, no checks) forwards at about 0.7× nginx's `proxy_pass`, below the proxy row's 0.8×
//! target before rushgate does anything of its own. Its per-request cost is generality this
//! proxy does not need: a checkout future racing a lazy connect, a pool keyed by scheme and
//! authority behind a mutex, and a spawned task per request that waits for the connection to
//! become idle again. Here each upstream has its own stack of idle connections, and a
//! connection goes back on it from the response body itself when its last byte has been read.
//!
//! Guarantees: a request that fails on a kept-alive connection before response headers arrive
//! (usually the keep-alive race: the shop closed the connection just as the request went out;
//! also a broken answer) is sent once more on a fresh connection when that cannot change
//! anything: it was never written, or it is idempotent (RFC 9110 §9.2.2) and has no body, as
//! nginx does. Any other request is written at most once, and nothing is sent a third time. A
//! connection is offered for reuse once its response was read to the end, and taken only when
//! hyper says it is ready for another request (its request body may still have been uploading);
//! one whose response body is dropped early is closed. Idle connections past [`IDLE_TIMEOUT`]
//! or closed by the shop are dropped when met: at checkout from the top of the stack, at checkin
//! from the bottom.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Most idle connections kept per upstream; more are closed when they finish.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused (the shop may have a longer
/// keep-alive timeout than is wise to rely on, or none).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a checkout waits for an idle connection to become ready. Normally a connection is
/// ready within microseconds of its response ending; one that is not (its request body still
/// uploading after the shop answered early) is let go instead of holding up this request.
const READY_WAIT: Duration = Duration::from_millis(100);

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unreachable, name not resolved, timed out).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake with an `https://` shop failed (most often: its certificate does not
    /// verify, and the message says why).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The connection failed while the request was sent or the response read.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Idle connections to one upstream. Cloning is cheap (shared).
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// `host:port`, what a new connection dials.
    address: String,
    connect_timeout: Duration,
    /// TLS to an `https://` shop: the verifying connector and the name its certificate must
    /// carry (also the SNI).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Used last in, first out (the most recently used connection is the likeliest still
    /// open); stale ones are trimmed from the front.
    idle: Mutex<VecDeque<Idle>>,
}

/// A request body as sent: the shopper's, streamed, or none (kept apart so that a bodiless
/// request can be rebuilt for a second attempt).
type RequestBody = Either<Incoming, Empty<Bytes>>;

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Pool {
    /// A pool dialing `address` (`host:port`), giving up on a connect (TCP and TLS handshake)
    /// after `connect_timeout`; over TLS when `tls` is given.
    pub(crate) fn new(
        address: String,
        connect_timeout: Duration,
        tls: Option<(TlsConnector, ServerName<'static>)>,
    ) -> Pool {
        Pool {
            inner: Arc::new(PoolInner {
                address,
                connect_timeout,
                tls,
                idle: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response; its body hands the
    /// connection back to the pool once read to the end.
    ///
    /// The request is split before the returned future is made, and a fresh connection (the
    /// rare path) is awaited boxed: an `async fn` keeps its argument beside what it is split
    /// into, and a future is copied whole each time it is moved into its caller's state, so
    /// this one was 2.7 KB copied several times per request (`memmove` was the largest
    /// user-space symbol of the proxy row in `perf`).
    pub(crate) fn send(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<PooledBody>, SendError>> + Send + '_ {
        let (parts, body) = req.into_parts();
        let (req, replay) = if body.is_end_stream() && parts.method.is_idempotent() {
            let replay = replay_of(&parts);
            (
                Request::from_parts(parts, Either::Right(Empty::new())),
                Some(replay),
            )
        } else {
            (Request::from_parts(parts, Either::Left(body)), None)
        };
        async move {
            let Some(sender) = self.checkout().await else {
                return Box::pin(self.send_fresh(req)).await;
            };
            match self.send_reused(sender, req).await {
                Ok(resp) => Ok(resp),
                Err(mut e) => {
                    let again = match (e.take_message(), replay) {
                        // Not written: the connection closed between checkout and send.
                        (Some(unsent), _) => unsent,
                        (None, Some(replay)) => {
                            tracing::debug!(error = %e.into_error(), "kept-alive connection failed; sending again");
                            replay
                        }
                        (None, None) => return Err(SendError::Http(e.into_error())),
                    };
                    Box::pin(self.send_fresh(again)).await
                }
            }
        }
    }

    /// Sends on a kept-alive connection; the error holds the request when it was not written.
    async fn send_reused(
        &self,
        mut sender: SendRequest<RequestBody>,
        req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, TrySendError<Request<RequestBody>>> {
        let answer = sender.try_send_request(req);
        tokio::pin!(answer);
        tokio::select! {
            biased;
            answer = &mut answer => return answer.map(|resp| self.wrap(resp, Some(sender))),
            // `Err` only once the connection has closed.
            Err(_) = sender.ready() => {}
        }
        // A request that entered the connection's queue just as the connection shut it is
        // handed back only when the queue is freed, and the queue lives as long as this sender
        // (found in tests: about 1 in 800 forced closes hung until the response timeout). In a
        // narrower window `ready()` can answer `Ok` first, which disables this branch: such a
        // request still ends at the caller's response timeout.
        drop(sender);
        answer.await.map(|resp| self.wrap(resp, None))
    }

    /// Sends on a new connection.
    async fn send_fresh(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await?;
        Ok(self.wrap(resp, Some(sender)))
    }

    /// The most recently idle connection that is still open and ready, if any.
    async fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        loop {
            let idle = self.lock().pop_back()?;
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut sender = idle.sender;
            if sender.is_ready() {
                return Some(sender);
            }
            // Its connection task has not yet seen the previous exchange end (the common
            // case: microseconds), or it closed meanwhile (an error), or the previous request
            // body is still uploading (dropped: the connection finishes that exchange, then
            // closes). The timer is only armed here, not on the ready path.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, SendError> {
        let (stream, deadline) = self.dial().await?;
        match &self.inner.tls {
            None => Self::handshake(stream).await,
            Some(tls) => Self::handshake(self.secure(tls, stream, deadline).await?).await,
        }
    }

    /// A TCP connection to the upstream (no Nagle delay: small requests and answers only wait
    /// to be coalesced), and the deadline its TLS handshake, if any, must also meet.
    async fn dial(&self) -> Result<(TcpStream, tokio::time::Instant), SendError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.connect_timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(&inner.address))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok((stream, deadline))
    }

    /// TLS on `stream` for an `https://` shop, by `deadline`.
    async fn secure(
        &self,
        (connector, name): &(TlsConnector, ServerName<'static>),
        stream: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SendError> {
        tokio::time::timeout_at(deadline, connector.connect(name.clone(), stream))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| SendError::Tls(e.to_string()))
    }

    fn timed_out(&self) -> SendError {
        SendError::Connect(format!(
            "no connection within {:?}",
            self.inner.connect_timeout
        ))
    }

    /// HTTP/1.1 on a connected socket; the connection is driven by its own task.
    async fn handshake<S>(stream: S) -> Result<SendRequest<RequestBody>, SendError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends an upgrade request (`Connection: upgrade`) on a connection of its own, never
    /// pooled: after a `101` the socket belongs to the tunnel (`hyper::upgrade::on` of the
    /// response), and after any other answer it is closed.
    pub(crate) async fn send_upgrade(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let (stream, deadline) = self.dial().await?;
        match &self.inner.tls {
            None => Self::send_upgrading(stream, req).await,
            Some(tls) => Self::send_upgrading(self.secure(tls, stream, deadline).await?, req).await,
        }
    }

    async fn send_upgrading<S>(
        stream: S,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = http1::handshake::<_, Incoming>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended with an error");
            }
        });
        Ok(sender.send_request(req).await?)
    }

    fn wrap(
        &self,
        resp: Response<Incoming>,
        sender: Option<SendRequest<RequestBody>>,
    ) -> Response<PooledBody> {
        resp.map(|inner| {
            let mut body = PooledBody {
                inner,
                lease: sender.map(|sender| (sender, self.clone())),
            };
            // An empty answer (HEAD, 204, 304, Content-Length: 0) may never be polled.
            if body.inner.is_end_stream() {
                body.release();
            }
            body
        })
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest sit at the front and are only reached by checkouts when traffic peaks:
        // drop those the shop closed or that idled too long, so they do not hold its sockets.
        while idle
            .front()
            .is_some_and(|i| i.sender.is_closed() || now.duration_since(i.since) > IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: now });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding the lock leaves a plain queue of connections: still usable.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The same bodiless request again (extensions are rushgate's own and not sent).
fn replay_of(parts: &Parts) -> Request<RequestBody> {
    let mut req = Request::new(Either::Right(Empty::new()));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// A response body from the upstream that returns its connection to the pool when read to
/// the end (and closes it when dropped before).
pub(crate) struct PooledBody {
    inner: Incoming,
    lease: Option<(SendRequest<RequestBody>, Pool)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.lease.take() {
            pool.checkin(sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // A body of known length ends with its last frame, and may not be polled again.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(None) => this.release(),
            // The connection's state is unknown: never reuse it.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
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
