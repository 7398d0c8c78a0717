//! `[store]`: where room, sale and coupon state lives (Redis or the embedded store), how the
//! store is used, and what shoppers get while it is unreachable. Redis comes as one server
//! (`redis://`, `rediss://` over TLS), a Redis Cluster (`redis-cluster://` /
//! `rediss-cluster://host:port,host:port`) or a Sentinel-watched master (`store.sentinel`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://` or `rediss://` (TLS) URL of one server, or `redis-cluster://` /
    /// `rediss-cluster://` with the cluster's seed nodes (`host:port,host:port`); absent (and no
    /// `sentinel`) means the embedded in-process store (one node only).
    pub redis_url: Option<String>,
    /// A master watched by Sentinels: rushgate asks them where the master is and follows every
    /// failover without a restart.
    pub sentinel: Option<SentinelConfig>,
    /// PEM file of the certificate authorities that sign the Redis server's certificate (TLS);
    /// absent: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for a Redis that requires one (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM (PKCS#8, PKCS#1 or SEC1) private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Replicas that must confirm a purchase, coupon claim, transfer or admission (`WAIT`)
    /// before it is answered; 0: answer once the master has it. A confirmation that does not
    /// come within the command timeout is a 503 (retry with the same key), never a success.
    pub durable_acks: u32,
    /// What requests that need the store get while it is unreachable.
    pub on_store_error: OnStoreError,
    /// `capped`: how long (seconds) a node may keep admitting on its lease once the store
    /// stops answering; its lease is its share of what the room admits in that time.
    pub capped_lease_seconds: u64,
    /// Per-command timeout; a slower store counts as unavailable.
    pub command_timeout_ms: u64,
    /// How often each node refreshes its cached room state (and ticks the pacer).
    pub refresh_ms: u64,
    /// Redis connections per node.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            sentinel: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            durable_acks: 0,
            on_store_error: OnStoreError::FailClosed,
            capped_lease_seconds: 30,
            command_timeout_ms: 1000,
            refresh_ms: 250,
            pool_size: 4,
        }
    }
}

/// `store.sentinel`: the master's name and the Sentinels to ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the Sentinels monitor the master by (`sentinel monitor <master> ...`).
    pub master: String,
    /// Sentinels, `host:port` each (at least one; list them all).
    pub nodes: Vec<String>,
    /// Password of the Redis servers (`requirepass`), when set.
    pub password: Option<Secret>,
    /// Password of the Sentinels themselves, when set.
    pub sentinel_password: Option<Secret>,
}

/// Which Redis a store config names, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://`, or `rediss://` over TLS): the URL as given.
    Single {
        /// The URL.
        url: String,
    },
    /// A Redis Cluster: seed nodes (any reachable one reveals the rest).
    Cluster {
        /// `host:port` of the seed nodes.
        nodes: Vec<(String, u16)>,
        /// TLS to every node.
        tls: bool,
        /// ACL user and password from the URL, when given.
        username: Option<String>,
        /// Password from the URL, when given.
        password: Option<String>,
    },
    /// A master watched by Sentinels.
    Sentinel {
        /// The master's name.
        master: String,
        /// `host:port` of the Sentinels.
        nodes: Vec<(String, u16)>,
        /// Data servers' password.
        password: Option<String>,
        /// Sentinels' password.
        sentinel_password: Option<String>,
    },
}

impl RedisTarget {
    /// Whether the connection uses TLS.
    pub fn tls(&self) -> bool {
        match self {
            RedisTarget::Single { url } => url.starts_with("rediss://"),
            RedisTarget::Cluster { tls, .. } => *tls,
            RedisTarget::Sentinel { .. } => false,
        }
    }
}

/// `host:port` parsed, or `None`.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Store outage policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Refuse work that needs the store with 503 + `Retry-After`.
    FailClosed,
    /// Let shoppers through (issue passes without queueing) while the store is down.
    FailOpen,
    /// Keep admitting waiters in queue order on the node's lease of the room's budget (its
    /// share of the rate and of the free session slots, leased while the store answered):
    /// never above the room's limits across all nodes. Passes are marked `deg`; sales stay
    /// closed; the node records its admissions in the store when it answers again.
    Capped,
}

impl StoreConfig {
    /// The Redis this config names (`None`: the embedded store).
    pub fn redis(&self) -> Option<RedisTarget> {
        if let Some(s) = &self.sentinel {
            return Some(RedisTarget::Sentinel {
                master: s.master.clone(),
                nodes: s.nodes.iter().filter_map(|n| host_port(n)).collect(),
                password: s.password.as_ref().map(|p| p.0.clone()),
                sentinel_password: s.sentinel_password.as_ref().map(|p| p.0.clone()),
            });
        }
        let url = self.redis_url.as_deref()?;
        let cluster = url
            .strip_prefix("redis-cluster://")
            .map(|rest| (rest, false))
            .or_else(|| {
                url.strip_prefix("rediss-cluster://")
                    .map(|rest| (rest, true))
            });
        let Some((rest, tls)) = cluster else {
            return Some(RedisTarget::Single {
                url: url.to_string(),
            });
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (Some(auth), hosts),
            None => (None, rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
            Some((user, pass)) => (
                (!user.is_empty()).then(|| user.to_string()),
                (!pass.is_empty()).then(|| pass.to_string()),
            ),
            None => (None, None),
        };
        Some(RedisTarget::Cluster {
            nodes: hosts.split(',').filter_map(host_port).collect(),
            tls,
            username,
            password,
        })
    }

    /// URL scheme, topology, TLS files, timeout, refresh interval and pool size rules.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        if let Some(url) = &self.redis_url {
            let schemes = [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
            ];
            if !schemes.iter().any(|s| url.starts_with(s)) {
                bad(
                    "store.redis_url",
                    "must start with redis://, rediss:// (TLS), redis-cluster:// or \
                     rediss-cluster://",
                );
            }
            if self.sentinel.is_some() {
                bad(
                    "store.redis_url",
                    "set either redis_url or [store.sentinel], not both",
                );
            }
        }
        if let Some(RedisTarget::Cluster { nodes, .. }) = self.redis() {
            let listed = self
                .redis_url
                .as_deref()
                .and_then(|u| u.split_once("://"))
                .map_or(0, |(_, rest)| {
                    rest.rsplit_once('@')
                        .map_or(rest, |(_, h)| h)
                        .split(',')
                        .count()
                });
            if nodes.is_empty() || nodes.len() != listed {
                bad(
                    "store.redis_url",
                    "a cluster URL lists its seed nodes as host:port,host:port",
                );
            }
        }
        if let Some(s) = &self.sentinel {
            if s.master.trim().is_empty() {
                bad("store.sentinel.master", "must name the monitored master");
            }
            if s.nodes.is_empty() || s.nodes.iter().any(|n| host_port(n).is_none()) {
                bad(
                    "store.sentinel.nodes",
                    "must list the Sentinels as \"host:port\" (at least one)",
                );
            }
        }
        let tls = self.redis().is_some_and(|t| t.tls());
        for (field, file) in [
            ("store.tls_ca_file", &self.tls_ca_file),
            ("store.tls_cert_file", &self.tls_cert_file),
            ("store.tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = file {
                if !tls {
                    bad(
                        field,
                        "is for TLS: use a rediss:// or rediss-cluster:// URL",
                    );
                } else if std::fs::metadata(path)
                    .map(|m| !m.is_file())
                    .unwrap_or(true)
                {
                    bad(field, "names no readable file");
                }
            }
        }
        if self.durable_acks > 0 {
            if self.redis().is_none() {
                bad(
                    "store.durable_acks",
                    "needs a Redis with replicas (the embedded store has none)",
                );
            }
            if self.durable_acks > 16 {
                bad("store.durable_acks", "must be at most 16");
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            bad(
                "store.tls_cert_file",
                "a client certificate needs its key (tls_cert_file and tls_key_file together)",
            );
        }
        if self.command_timeout_ms == 0 {
            bad("store.command_timeout_ms", "must be greater than 0");
        }
        if !(1..=600).contains(&self.capped_lease_seconds) {
            bad("store.capped_lease_seconds", "must be between 1 and 600");
        }
        if !(10..=5000).contains(&self.refresh_ms) {
            bad("store.refresh_ms", "must be between 10 and 5000");
        }
        if self.pool_size == 0 || self.pool_size > 64 {
            bad("store.pool_size", "must be between 1 and 64");
        }
    }
}
