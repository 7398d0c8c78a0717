//! Forwarding to an `http://` or `https://` shop: kept-alive connections ([`super::pool`]),
//! bodies streamed both ways (never collected), connect and response-header timeouts, hop-by-hop headers removed
//! (RFC 9110 §7.6.1), `X-Forwarded-*` set, rushgate's own cookies stripped, and the pass
//! attached as `Rushgate-Pass`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamUrl;
use crate::http::body::{Body, BoxError};
use crate::http::credentials::is_rushgate_cookie;
use crate::http::error::ApiError;
use crate::ops::metrics::UpstreamMetrics;

use super::pool::{Pool, SendError};

/// The header carrying a verified pass to the shop.
pub const PASS_HEADER: HeaderName = HeaderName::from_static("rushgate-pass");
/// The response header by which the shop ends the shopper's session (`Rushgate-Session: end`).
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("rushgate-session");

// Header names as constants: a name given as `&str` is parsed on every lookup.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long opening a connection to the shop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the shop may take to send response headers (the body then streams untimed).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the
/// non-standard `Proxy-Connection` and `Keep-Alive` still sent by old clients).
/// A `static`, not a `const`: a const array of names would be built (and dropped) at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// An `http://` upstream: where it lives and the connections kept open to it. Cloning is cheap
/// (the connections are shared).
#[derive(Clone)]
pub(crate) struct Target {
    pub(super) authority: Authority,
    /// The `Host` the shop is sent: the upstream's own authority, as any HTTP client sends it
    /// (the shopper's host goes in `X-Forwarded-Host`).
    host: HeaderValue,
    pub(super) pool: Pool,
    pub(super) metrics: UpstreamMetrics,
    /// Upgraded connections (WebSockets) this upstream may have open at once: the permits and
    /// the number they started with (kept across reloads while that number stays).
    pub(super) tunnels: (Arc<tokio::sync::Semaphore>, usize),
    /// A tunnel with no byte moving for this long is closed.
    pub(super) tunnel_idle: Duration,
}

impl Target {
    /// The upstream at `url` (parsed and checked by config), with its own connection pool; an
    /// `https://` one verified against `ca_file`'s authorities (else the system's roots). The
    /// error says why the TLS settings cannot be made.
    pub(crate) fn new(
        url: &UpstreamUrl,
        ca_file: Option<&Path>,
        (max_tunnels, tunnel_idle): (usize, Duration),
    ) -> Result<Target, String> {
        let authority = url.authority();
        let tls = if url.tls() {
            let roots = crate::tls::roots(ca_file, "upstream_ca_file")?;
            let mut config = crate::tls::client_config(roots, None)?;
            // The pool speaks HTTP/1.1 to the shop.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(url.server_name().to_string()).map_err(|e| {
                format!(
                    "`{}` is not a valid TLS server name: {e}",
                    url.server_name()
                )
            })?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Target {
            authority: authority.clone(),
            host: url.host_header().clone(),
            pool: Pool::new(url.address(), CONNECT_TIMEOUT, tls),
            metrics: UpstreamMetrics::new(authority.as_str()),
            tunnels: (
                Arc::new(tokio::sync::Semaphore::new(max_tunnels)),
                max_tunnels,
            ),
            tunnel_idle,
        })
    }
}

/// What the proxy adds about the original request.
pub(crate) struct Forwarding {
    /// The client's address (appended to `X-Forwarded-For`).
    pub(crate) peer: Option<IpAddr>,
    /// The verified pass for `Rushgate-Pass`, when the path is protected.
    pub(crate) pass: Option<HeaderValue>,
    /// The request id, passed on as `X-Request-Id` so shop logs can be joined with ours.
    pub(crate) request_id: Option<HeaderValue>,
}

impl Target {
    /// Rewrites a shopper's request head into the one the shop is sent: headers per the module
    /// doc, `Host` the upstream's, origin-form URI, HTTP/1.1.
    pub(super) fn address(&self, parts: &mut http::request::Parts, extra: Forwarding) {
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        prepare_request_headers(&mut parts.headers, original_host, extra);
        parts.headers.insert(header::HOST, self.host.clone());
        // Origin-form (`/path?query`), as a request to an origin server is written.
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        parts.version = Version::HTTP_11;
    }

    /// What the shopper is told when the shop did not answer (502, naming the cause), counted
    /// by kind and logged with the detail (`what` says which request it was).
    pub(super) fn unanswered(&self, e: SendError, what: &'static str) -> ApiError {
        let (cause, kind) = match e {
            SendError::Connect(_) => ("connection refused or unreachable", "connect"),
            SendError::Tls(_) => (
                "its TLS certificate did not verify or the handshake failed",
                "tls",
            ),
            SendError::Http(_) => ("the connection failed", "other"),
        };
        self.metrics.failed(kind);
        tracing::warn!(upstream = %self.authority, error = %e, "{what}");
        ApiError::UpstreamUnavailable(cause.to_string())
    }

    /// Sends `req` to this upstream and streams the answer back. The request body is handed to
    /// the upstream as it arrives and the response body is returned unread, so neither is ever
    /// held whole in memory. Fails with 502 when the upstream cannot be reached (or resets
    /// the exchange) and 504 when it sends no response headers within the timeout.
    pub(crate) async fn forward(
        &self,
        req: Request<Incoming>,
        extra: Forwarding,
    ) -> Result<Response<Body>, ApiError> {
        let (mut parts, body) = req.into_parts();
        self.address(&mut parts, extra);
        let upstream_req = Request::from_parts(parts, body);
        let started = std::time::Instant::now();
        // Boxed: moved whole into this future's state otherwise (see `Pool::send`).
        let sending = Box::pin(self.pool.send(upstream_req));
        let answer = tokio::time::timeout(RESPONSE_TIMEOUT, sending).await;
        let failed = |kind| self.metrics.failed(kind);
        let resp = match answer {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(self.unanswered(e, "upstream request failed")),
            Err(_) => {
                failed("timeout");
                tracing::warn!(upstream = %self.authority, "upstream response timed out");
                return Err(ApiError::UpstreamTimeout(RESPONSE_TIMEOUT.as_secs()));
            }
        };
        // Time to response headers (the body streams afterwards).
        self.metrics
            .record(resp.status().as_u16(), started.elapsed().as_secs_f64());
        let (mut parts, body) = resp.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        let body: Body = body.map_err(|e| Box::new(e) as BoxError).boxed();
        Ok(Response::from_parts(parts, body))
    }
}

/// Rewrites the headers of a request bound for the shop (see the module doc).
pub(crate) fn prepare_request_headers(
    headers: &mut HeaderMap,
    original_host: Option<HeaderValue>,
    extra: Forwarding,
) {
    remove_hop_by_hop(headers);
    headers.remove(&PASS_HEADER);
    headers.remove(header::HOST);
    strip_rushgate_cookies(headers);

    let mut forwarded_for = String::new();
    for hop in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        forwarded_for.push_str(hop);
        forwarded_for.push_str(", ");
    }
    match extra.peer {
        Some(ip) => {
            use std::fmt::Write as _;
            let _ = write!(forwarded_for, "{ip}");
        }
        None => forwarded_for.truncate(forwarded_for.len().saturating_sub(2)),
    }
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        if !forwarded_for.is_empty() {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    // A TLS-terminating balancer in front of rushgate says https; otherwise it was plain http.
    let proto_https = headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if proto_https { "https" } else { "http" }),
    );
    match original_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    if let Some(pass) = extra.pass {
        headers.insert(PASS_HEADER, pass);
    }
    if let Some(id) = extra.request_id {
        headers.insert(X_REQUEST_ID, id);
    }
}

/// Removes the hop-by-hop headers and every header named in `Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers a message has finds the ones present (most messages carry
    // none, a browser's request only `Connection`); removing all nine by name cost more.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Only names present are made into `HeaderName`s: most `Connection` values name
            // nothing but `keep-alive` or `close`, and making a name allocates.
            .filter(|name| headers.contains_key(*name))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// Drops `rg_ticket_*` and `rg_pass_*` from every `Cookie` header (the shop gets the pass in
/// `Rushgate-Pass`, never a ticket), keeping the shop's own cookies in order.
fn strip_rushgate_cookies(headers: &mut HeaderMap) {
    let mut kept = String::new();
    for pair in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let name = pair.split('=').next().unwrap_or("").trim();
        if is_rushgate_cookie(name) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    headers.remove(header::COOKIE);
    if kept.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&kept) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_rewritten_for_the_shop() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("rushgate-pass", HeaderValue::from_static("forged"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rg_ticket_drop=t; rg_pass_drop=p"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        let host = h.get(header::HOST).cloned();
        let extra = Forwarding {
            peer: Some("127.0.0.1".parse().unwrap()),
            pass: Some(HeaderValue::from_static("the.pass.jwt")),
            request_id: Some(HeaderValue::from_static("rid-1")),
        };
        prepare_request_headers(&mut h, host, extra);
        for gone in ["connection", "x-secret-hop", "keep-alive", "te", "host"] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        assert_eq!(h["cookie"], "a=1; b=2");
        assert_eq!(h["rushgate-pass"], "the.pass.jwt");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-request-id"], "rid-1");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn only_rushgate_cookies_means_no_cookie_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("rg_ticket_x=1; rg_pass_x=2"),
        );
        strip_rushgate_cookies(&mut h);
        assert!(!h.contains_key(header::COOKIE));
    }
}
