//! `[server]` (listeners, cookie policy, API prefix, trusted proxies) and `[admin]` (the admin
//! API's token, whose rules depend on the admin listener). Trusted proxies are parsed here, by
//! the one rule ([`parse_net`]) that both validation and the rate limiter's client-IP logic use.

use std::net::{IpAddr, SocketAddr};

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
    /// Maximum simultaneous connections per listener; further accepts wait.
    pub max_connections: usize,
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
            trusted_proxies: Vec::new(),
        }
    }
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
