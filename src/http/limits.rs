//! Per-client rate limits (governor) for joins, polls, purchases and coupon claims.
//!
//! A request is keyed by the ticket or pass it presents (so shoppers behind one carrier NAT do
//! not share a budget), else by client IP (IPv6 by its /64, which one subscriber usually owns).
//! The client IP is the TCP peer, or the right-most untrusted `X-Forwarded-For` hop when the peer
//! is a configured trusted proxy. Keyed state is bounded: an upkeep task drops idle keys every
//! second and starts afresh past [`MAX_KEYS`], so an attack from millions of addresses cannot
//! grow memory without bound.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use ipnet::IpNet;
use tokio::sync::watch;

use super::credentials::PeerAddr;
use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::ops::metrics::LIMITER_REJECTIONS;

/// Most keys one limiter holds before it starts afresh (about 100 bytes each).
pub const MAX_KEYS: usize = 200_000;

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Joining a room.
    Join,
    /// Polling a position.
    Poll,
    /// Purchases.
    Purchase,
    /// Coupon claims.
    Coupon,
}

impl Endpoint {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Join => "join",
            Endpoint::Poll => "poll",
            Endpoint::Purchase => "purchase",
            Endpoint::Coupon => "coupon",
        }
    }
}

/// A limiter key: a token's hash or a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Token(u64),
    Ip(IpAddr),
}

struct Limiter {
    quota: Quota,
    keyed: ArcSwap<DefaultKeyedRateLimiter<Key>>,
}

impl Limiter {
    fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_minute)?;
        let quota = Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate));
        Some(Self {
            quota,
            keyed: ArcSwap::from_pointee(DefaultKeyedRateLimiter::keyed(quota)),
        })
    }
}

/// Every endpoint's limiter plus the trusted proxies. Cheap to clone.
#[derive(Clone)]
pub struct Limits {
    limiters: Arc<[Option<Limiter>; 4]>,
    trusted: Arc<Vec<IpNet>>,
}

impl Limits {
    /// Limiters per the config (`0` per minute turns an endpoint's limit off). `trusted` are the
    /// `server.trusted_proxies` as the config parsed them (`ServerConfig::trusted_nets`).
    pub fn new(cfg: &LimitsConfig, trusted: Vec<IpNet>) -> Self {
        Self {
            limiters: Arc::new([
                Limiter::new(cfg.join_per_minute, cfg.join_burst),
                Limiter::new(cfg.poll_per_minute, cfg.poll_burst),
                Limiter::new(cfg.purchase_per_minute, cfg.purchase_burst),
                Limiter::new(cfg.coupon_per_minute, cfg.coupon_burst),
            ]),
            trusted: Arc::new(trusted),
        }
    }

    fn limiter(&self, endpoint: Endpoint) -> Option<&Limiter> {
        self.limiters[endpoint as usize].as_ref()
    }

    /// Takes one request from the budget of `token` (when presented) or of the client address;
    /// `RateLimited` with the seconds to wait when it is spent.
    pub fn check(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        peer: Option<PeerAddr>,
        token: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(limiter) = self.limiter(endpoint) else {
            return Ok(());
        };
        let key = match token {
            Some(t) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                t.hash(&mut h);
                Key::Token(h.finish())
            }
            None => match peer {
                Some(p) => Key::Ip(bucket(self.client_ip(headers, p.0.ip()))),
                None => return Ok(()),
            },
        };
        match limiter.keyed.load().check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::counter!(LIMITER_REJECTIONS, "endpoint" => endpoint.as_str()).increment(1);
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::RateLimited {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// `X-Forwarded-For` hop that is not itself trusted.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    /// The address a client is known by for per-address rules (rate limits, proof-of-work
    /// challenges and pressure): [`Limits::client_ip`], IPv6 by its /64 and IPv4-mapped IPv6
    /// as IPv4. A request without a peer (an in-process service call) is `0.0.0.0`.
    pub fn client_address(&self, headers: &HeaderMap, peer: Option<PeerAddr>) -> IpAddr {
        match peer {
            Some(p) => bucket(self.client_ip(headers, p.0.ip())),
            None => IpAddr::from([0, 0, 0, 0]),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Drops keys whose budget is full again and starts afresh past [`MAX_KEYS`].
    pub fn upkeep(&self) {
        for limiter in self.limiters.iter().flatten() {
            let keyed = limiter.keyed.load();
            keyed.retain_recent();
            if keyed.len() > MAX_KEYS {
                tracing::warn!(
                    keys = keyed.len(),
                    "rate limiter over its key bound; starting afresh"
                );
                limiter
                    .keyed
                    .store(Arc::new(DefaultKeyedRateLimiter::keyed(limiter.quota)));
            } else {
                keyed.shrink_to_fit();
            }
        }
    }

    /// Keys held by the limiter of `endpoint` (tests and metrics).
    pub fn keys(&self, endpoint: Endpoint) -> usize {
        self.limiter(endpoint).map_or(0, |l| l.keyed.load().len())
    }
}

/// Runs [`Limits::upkeep`] every second until shutdown.
pub async fn upkeep(limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => limits.upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// IPv6 clients are limited per /64: one subscriber usually holds a whole /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_net;
    use http::HeaderValue;
    use std::net::SocketAddr;

    fn limits(trusted: &[&str]) -> Limits {
        let cfg = LimitsConfig {
            join_per_minute: 60,
            join_burst: 3,
            ..LimitsConfig::default()
        };
        let trusted = trusted.iter().filter_map(|t| parse_net(t)).collect();
        Limits::new(&cfg, trusted)
    }

    fn peer(ip: &str) -> Option<PeerAddr> {
        Some(PeerAddr(SocketAddr::new(
            ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            1,
        )))
    }

    #[test]
    fn a_client_over_its_budget_is_refused_others_are_not() {
        let l = limits(&[]);
        let h = HeaderMap::new();
        for _ in 0..3 {
            assert!(l.check(Endpoint::Join, &h, peer("10.0.0.1"), None).is_ok());
        }
        match l.check(Endpoint::Join, &h, peer("10.0.0.1"), None) {
            Err(ApiError::RateLimited { retry_after }) => assert!(retry_after >= 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(l.check(Endpoint::Join, &h, peer("10.0.0.2"), None).is_ok());
        assert!(l
            .check(Endpoint::Join, &h, peer("10.0.0.1"), Some("ticket"))
            .is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = limits(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.1.1.1"),
        );
        let proxy: IpAddr = "10.2.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(
            l.client_ip(&h, proxy),
            "203.0.113.9".parse::<IpAddr>().unwrap_or(proxy)
        );
        let stranger: IpAddr = "198.51.100.7".parse().unwrap_or(proxy);
        assert_eq!(l.client_ip(&h, stranger), stranger);
    }

    #[test]
    fn ipv6_is_limited_per_64_and_state_stays_bounded() {
        let l = limits(&[]);
        let h = HeaderMap::new();
        for i in 0..3u16 {
            let ip = format!("2001:db8:1:2::{i:x}");
            assert!(l.check(Endpoint::Join, &h, peer(&ip), None).is_ok());
        }
        assert!(l
            .check(Endpoint::Join, &h, peer("2001:db8:1:2::ff"), None)
            .is_err());
        for i in 0..(MAX_KEYS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = l.check(
                Endpoint::Join,
                &h,
                Some(PeerAddr(SocketAddr::new(ip, 1))),
                None,
            );
        }
        l.upkeep();
        assert!(
            l.keys(Endpoint::Join) <= MAX_KEYS,
            "{}",
            l.keys(Endpoint::Join)
        );
    }
}
