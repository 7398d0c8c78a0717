//! WebSocket and other upgrades through the proxy. The request was already judged like any
//! other (a protected path needs a valid pass: [`super::handle`] refuses an upgrade without one
//! with 401, or shows a browser the waiting page); here it goes to the shop on a connection of its
//! own, and once the shop answers `101 Switching Protocols` to the protocol asked for, the bytes
//! are copied both ways until either side closes.
//!
//! Guarantees: at most `rooms[].max_tunnels` tunnels per upstream are open at once, across
//! reloads (one more gets 503 with `Retry-After`, and the shop never sees it); `h2c` is refused
//! (an HTTP/2 connection to the shop behind the proxy's back would bypass every rule), and a 101
//! to another protocol than asked is a 502; a shop that answers anything but 101 has that answer
//! passed through and no tunnel opens; a tunnel on which no byte moves for
//! `rooms[].tunnel_idle_seconds` is closed; a tunnel holds no connection slot of the public
//! listener (it is counted and bounded here instead: `rushgate_proxy_tunnels_open`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

use super::forward::{remove_hop_by_hop, Forwarding, Target, RESPONSE_TIMEOUT};
use crate::http::activity::{Activity, Watched};
use crate::http::body::{Body, BoxError};
use crate::http::error::ApiError;

/// Whether `headers` ask to switch protocols (`Connection: upgrade` and an `Upgrade`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

impl Target {
    /// Opens a tunnel to this upstream for an upgrade request (see the module doc).
    pub(super) async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        extra: Forwarding,
    ) -> Result<Response<Body>, ApiError> {
        let Some(upgrade) = req.headers().get(header::UPGRADE).cloned() else {
            return Err(ApiError::UpgradeRefused("no Upgrade header".into()));
        };
        let protocol = first_protocol(&upgrade);
        if protocol.eq_ignore_ascii_case("h2c") {
            return Err(ApiError::UpgradeRefused(
                "h2c is not proxied (use HTTP/2 with TLS, or HTTP/1.1)".into(),
            ));
        }
        let Ok(permit) = self.tunnels.0.clone().try_acquire_owned() else {
            self.metrics.tunnel("refused");
            return Err(ApiError::TunnelsFull);
        };
        let shopper_side = hyper::upgrade::on(&mut req);
        let (mut parts, body) = req.into_parts();
        self.address(&mut parts, extra);
        // Hop-by-hop headers were removed with the rest; these two are the request itself.
        parts.headers.insert(header::UPGRADE, upgrade);
        parts.headers.remove("http2-settings");
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let sending = self.pool.send_upgrade(Request::from_parts(parts, body));
        let mut resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sending).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(self.unanswered(e, "upstream upgrade failed")),
            Err(_) => {
                self.metrics.failed("timeout");
                return Err(ApiError::UpstreamTimeout(RESPONSE_TIMEOUT.as_secs()));
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            self.metrics.tunnel("declined");
            let (mut parts, body) = resp.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            let body: Body = body.map_err(|e| Box::new(e) as BoxError).boxed();
            return Ok(Response::from_parts(parts, body));
        }
        let switched = resp.headers().get(header::UPGRADE).cloned();
        if !switched
            .as_ref()
            .is_some_and(|s| first_protocol(s).eq_ignore_ascii_case(protocol.as_str()))
        {
            self.metrics.failed("other");
            tracing::warn!(upstream = %self.authority, asked = %protocol, "the shop switched to another protocol than asked; not tunnelled");
            return Err(ApiError::UpstreamUnavailable(
                "it switched to another protocol than asked".into(),
            ));
        }
        self.metrics.tunnel("opened");
        let shop_side = hyper::upgrade::on(&mut resp);
        let open = self.metrics.tunnels_open();
        let (upstream, idle) = (self.authority.clone(), self.tunnel_idle);
        tokio::spawn(async move {
            let (shopper, shop) = match tokio::join!(shopper_side, shop_side) {
                (Ok(shopper), Ok(shop)) => (shopper, shop),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "upgrade not completed");
                    return;
                }
            };
            let _open = OpenTunnel::new(open, permit);
            let activity = Arc::new(Activity::default());
            let mut shopper = Watched::new(TokioIo::new(shopper), activity.clone());
            let mut shop = TokioIo::new(shop);
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut shopper, &mut shop) => {
                    if let Err(e) = copied {
                        tracing::debug!(%upstream, error = %e, "tunnel ended with an error");
                    }
                }
                () = quiet(&activity, idle) => {
                    tracing::debug!(%upstream, "tunnel closed: no byte moved for {idle:?}");
                }
            }
        });
        // The shop's 101 with its handshake headers (hop-by-hop ones but the switch itself
        // removed), and an empty body: the bytes after it belong to the tunnel.
        let (mut parts, _) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        if let Some(switched) = switched {
            parts.headers.insert(header::UPGRADE, switched);
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        Ok(Response::from_parts(parts, crate::http::body::full("")))
    }
}

/// The first protocol an `Upgrade` value names (`websocket` of `websocket, foo/2`).
fn first_protocol(value: &HeaderValue) -> String {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Resolves once no byte moved either way (the shopper's side sees both directions) for
/// `idle`; looks every quarter of it.
async fn quiet(activity: &Activity, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(50));
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = tokio::time::Instant::now();
        if activity.take_read() | activity.take_wrote() {
            since = now;
        } else if now.duration_since(since) >= idle {
            return;
        }
    }
}

/// An open tunnel: in the gauge and holding its upstream's permit for as long as it lives
/// (also when its task panics).
struct OpenTunnel {
    gauge: metrics::Gauge,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl OpenTunnel {
    fn new(gauge: metrics::Gauge, permit: tokio::sync::OwnedSemaphorePermit) -> OpenTunnel {
        gauge.increment(1.0);
        OpenTunnel {
            gauge,
            _permit: permit,
        }
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}
