//! `[server]` (listeners, cookie policy, API prefix, trusted proxies) and `[admin]` (the admin
//! API's token, whose rules depend on the admin listener). Trusted proxies are parsed here, by
//! the one rule ([`parse_net`]) that both validation and the rate limiter's client-IP logic use.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: shopper traffic and the JSON API.
    pub listen: String,
    /// Admin listener: probes and metrics. Keep it on loopback or a private network.
    pub admin_listen: String,
    /// Whether cookies carry `Secure`: `auto` sets it when the request came over TLS or with
    /// `X-Forwarded-Proto: https`.
    pub secure_cookies: SecureCookies,
    /// URL prefix of the JSON API.
    pub api_prefix: String,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace_seconds: u64,
    /// On SIGTERM, how long the node keeps serving with `/readyz` answering 503 before it
    /// stops accepting, so a load balancer moves traffic away first (SIGINT skips it).
    pub drain_seconds: u64,
    /// Most simultaneous connections of the public listener. Lowered at start to what the
    /// process's open-file limit leaves after the admin listener, the store and the shop's
    /// connections (logged); connections over it are closed at once and counted.
    pub max_connections: usize,
    /// Most simultaneous connections of the admin listener (probes, metrics, admin API), kept
    /// apart from the public cap so a full public listener never starves `/readyz`.
    pub admin_max_connections: usize,
    /// Deadline from accept to the end of the first request head, TLS handshake included:
    /// sockets that send nothing (or too slowly) are closed after it.
    pub head_timeout_seconds: u64,
    /// Deadline for a JSON API request body, counted from its head (408 after it).
    pub body_timeout_seconds: u64,
    /// A connection with no request in progress is closed this long after its last answer
    /// (whatever it sends meanwhile); one whose client stops reading an answer is closed after
    /// its writes stayed blocked this long.
    pub idle_timeout_seconds: u64,
    /// Origins (`https://shop.example`, exactly: scheme, host, port when not the default) whose
    /// pages may call the JSON API with credentials; empty: no cross-origin calls.
    pub cors_origins: Vec<String>,
    /// Most event streams (`.../events`) open at once on this node; more get 503.
    pub max_event_streams: usize,
    /// Most event streams one client address (IPv6 by its /64) may hold open on this node;
    /// more get 429 (room for a household or office behind one address).
    pub max_event_streams_per_client: usize,
    /// HTTPS on the public listener (ALPN `h2` and `http/1.1`); the files are read again on
    /// reload (SIGHUP or the admin API) for new connections.
    pub tls: Option<ListenerTls>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed for the client IP.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            secure_cookies: SecureCookies::Auto,
            api_prefix: "/_rushgate".into(),
            shutdown_grace_seconds: 10,
            drain_seconds: 5,
            max_connections: 50_000,
            admin_max_connections: 1_024,
            head_timeout_seconds: 10,
            body_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            cors_origins: Vec::new(),
            max_event_streams: 50_000,
            max_event_streams_per_client: 64,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[server.tls]`: the public listener's certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key_file: PathBuf,
}

/// Cookie `Secure` attribute policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookies {
    /// Secure when the request came over TLS or `X-Forwarded-Proto: https`.
    Auto,
    /// Always Secure.
    True,
    /// Never Secure.
    False,
}

/// One address or a CIDR block (`10.0.0.0/8`, `::1`); surrounding spaces are ignored. `None`
/// when it is neither.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl ServerConfig {
    /// `trusted_proxies` parsed with [`parse_net`]; entries that do not parse are left out
    /// (validation refuses them, so a validated config loses none).
    pub fn trusted_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|t| parse_net(t))
            .collect()
    }

    /// Listener, admin-token, API-prefix and connection-cap rules, in that order. The admin
    /// token is checked here because whether it is needed depends on `admin_listen`.
    pub(super) fn validate(&self, admin: &AdminConfig, problems: &mut Vec<Problem>) {
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        if self.listen.parse::<SocketAddr>().is_err() {
            bad("server.listen", "must be an address like 127.0.0.1:8080");
        }
        if self.admin_listen.parse::<SocketAddr>().is_err() {
            bad(
                "server.admin_listen",
                "must be an address like 127.0.0.1:9090",
            );
        }
        // Port 0 (an ephemeral port for each) is fine twice.
        if self.listen == self.admin_listen && !self.listen.ends_with(":0") {
            bad("server.admin_listen", "must differ from server.listen");
        }
        admin.validate(&self.admin_listen, problems);
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        let prefix = &self.api_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            bad(
                "server.api_prefix",
                "must start with '/' and not end with '/'",
            );
        }
        if self.drain_seconds > 600 {
            bad(
                "server.drain_seconds",
                "must be at most 600 (a load balancer notices a 503 within seconds)",
            );
        }
        if self.max_connections == 0 {
            bad("server.max_connections", "must be greater than 0");
        }
        if self.max_event_streams == 0 {
            bad("server.max_event_streams", "must be greater than 0");
        }
        if self.max_event_streams_per_client == 0 {
            bad(
                "server.max_event_streams_per_client",
                "must be greater than 0",
            );
        }
        if self.admin_max_connections == 0 {
            bad("server.admin_max_connections", "must be greater than 0");
        }
        for (field, value, most) in [
            (
                "server.head_timeout_seconds",
                self.head_timeout_seconds,
                300,
            ),
            (
                "server.body_timeout_seconds",
                self.body_timeout_seconds,
                3600,
            ),
            (
                "server.idle_timeout_seconds",
                self.idle_timeout_seconds,
                3600,
            ),
        ] {
            if value == 0 || value > most {
                problems.push(Problem::new(
                    field,
                    format!("must be between 1 and {most} seconds"),
                ));
            }
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if let Err(e) = check_origin(origin) {
                problems.push(Problem::new(format!("server.cors_origins[{i}]"), e));
            }
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [
                ("server.tls.cert_file", &tls.cert_file),
                ("server.tls.key_file", &tls.key_file),
            ] {
                if !path.is_file() {
                    problems.push(Problem::new(
                        field,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
    }

    /// Every `trusted_proxies` entry must parse with [`parse_net`].
    pub(super) fn validate_trusted_proxies(&self, problems: &mut Vec<Problem>) {
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if parse_net(p).is_none() {
                problems.push(Problem::new(
                    format!("server.trusted_proxies[{i}]"),
                    "must be an IP address or CIDR block like 10.0.0.0/8",
                ));
            }
        }
    }
}

/// An origin as a browser sends it in `Origin`: `http(s)://host[:port]`, lower case, nothing
/// after the authority. The error says what is wrong.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin.contains('*') {
        return Err(
            "must be an exact origin: a wildcard cannot be allowed with credentials".into(),
        );
    }
    let example = "must be an origin like https://shop.example (scheme and host, no path)";
    let uri: http::Uri = origin.parse().map_err(|_| example.to_string())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    // `http` reads "https://shop.example" with the path "/": a written `/` is refused below.
    let bare = uri
        .path_and_query()
        .is_none_or(|p| matches!(p.as_str(), "" | "/"))
        && !origin.ends_with('/');
    if !scheme_ok || uri.authority().is_none() || !bare || origin.contains('@') {
        return Err(example.into());
    }
    if origin.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lower case, as browsers send it".into());
    }
    Ok(())
}

/// `[admin]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of the admin API (`/admin/v1`). Empty: the admin API is open, which
    /// `serve` allows only when `server.admin_listen` is a loopback address.
    pub token: Secret,
}

impl AdminConfig {
    /// The token, when one is set.
    pub fn token(&self) -> Option<&str> {
        let t = self.token.0.as_str();
        (!t.is_empty()).then_some(t)
    }

    /// A token is needed when the admin listener is not on loopback, and must be long enough.
    fn validate(&self, admin_listen: &str, problems: &mut Vec<Problem>) {
        if let Ok(addr) = admin_listen.parse::<SocketAddr>() {
            if !addr.ip().is_loopback() && self.token().is_none() {
                problems.push(Problem::new(
                    "admin.token",
                    "must be set when server.admin_listen is not a loopback address (env RUSHGATE_ADMIN_TOKEN)",
                ));
            }
        }
        if let Some(t) = self.token() {
            if t.len() < 16 {
                problems.push(Problem::new(
                    "admin.token",
                    "must be at least 16 characters",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_exact_origins() {
        assert!(check_origin("https://shop.example").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        for bad in [
            "*",
            "https://*.shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "shop.example",
            "ftp://shop.example",
            "https://Shop.example",
            "https://user@shop.example",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        assert_eq!(parse_net(" 10.0.0.0/8 "), "10.0.0.0/8".parse().ok());
        assert_eq!(parse_net("::1"), "::1/128".parse().ok());
        assert_eq!(parse_net("10.0.0.0/33"), None);
        let server = ServerConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "proxy.internal".into()],
            ..ServerConfig::default()
        };
        assert_eq!(server.trusted_nets().len(), 1);
        let mut problems = Vec::new();
        server.validate_trusted_proxies(&mut problems);
        assert_eq!(
            problems[0].to_string(),
            "server.trusted_proxies[1]: must be an IP address or CIDR block like 10.0.0.0/8"
        );
    }
}
