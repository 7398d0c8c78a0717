//! WebSocket and other upgrades through the proxy. The request was already judged like any
//! other (a protected path needs a valid pass: [`super::handle`] refuses an upgrade without one
//! with 401, or shows a browser the waiting page); here it goes to the shop on a connection of its
//! own, and once the shop answers `101 Switching Protocols` the bytes are copied both ways until
//! either side closes.
//!
//! Guarantees: at most `rooms[].max_tunnels` tunnels per upstream are open at once (one more
//! gets 503 with `Retry-After`, and the shop never sees it); a shop that answers anything but
//! 101 has that answer passed through and no tunnel opens; a tunnel holds no connection slot of
//! the public listener (it is counted and bounded here instead: `rushgate_proxy_tunnels_open`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::forward::{remove_hop_by_hop, Forwarding, Target, RESPONSE_TIMEOUT};
use super::pool::SendError;
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
        let Ok(permit) = self.tunnels.clone().try_acquire_owned() else {
            self.metrics.tunnel("refused");
            return Err(ApiError::TunnelsFull);
        };
        let upgrade = req.headers().get(header::UPGRADE).cloned();
        let shopper_side = hyper::upgrade::on(&mut req);
        let (mut parts, body) = req.into_parts();
        self.address(&mut parts, extra);
        // Hop-by-hop headers were removed with the rest; these two are the request itself.
        if let Some(upgrade) = upgrade {
            parts.headers.insert(header::UPGRADE, upgrade);
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let sending = self.pool.send_upgrade(Request::from_parts(parts, body));
        let mut resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sending).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let (cause, kind) = match e {
                    SendError::Connect(_) => ("connection refused or unreachable", "connect"),
                    SendError::Tls(_) => (
                        "its TLS certificate did not verify or the handshake failed",
                        "tls",
                    ),
                    SendError::Http(_) => ("the connection failed", "other"),
                };
                self.metrics.failed(kind);
                tracing::warn!(upstream = %self.authority, error = %e, "upstream upgrade failed");
                return Err(ApiError::UpstreamUnavailable(cause.to_string()));
            }
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
        self.metrics.tunnel("opened");
        let shop_side = hyper::upgrade::on(&mut resp);
        let open = self.metrics.tunnels_open();
        let upstream = self.authority.clone();
        tokio::spawn(async move {
            let (shopper, shop) = match tokio::join!(shopper_side, shop_side) {
                (Ok(shopper), Ok(shop)) => (shopper, shop),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "upgrade not completed");
                    return;
                }
            };
            open.increment(1.0);
            let (mut shopper, mut shop) = (TokioIo::new(shopper), TokioIo::new(shop));
            if let Err(e) = tokio::io::copy_bidirectional(&mut shopper, &mut shop).await {
                tracing::debug!(%upstream, error = %e, "tunnel ended with an error");
            }
            open.decrement(1.0);
            drop(permit);
        });
        // The shop's 101 as it sent it (Upgrade, Connection and its handshake headers), with an
        // empty body: the bytes after it belong to the tunnel.
        let (parts, _) = resp.into_parts();
        Ok(Response::from_parts(parts, crate::http::body::full("")))
    }
}
