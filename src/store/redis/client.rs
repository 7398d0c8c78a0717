//! The connection to Redis (fred pool) and the one path every command takes: counted, timed,
//! failures mapped to [`StoreError`] (unavailable or protocol), readiness kept truthful, and
//! script runs coalesced per room or sale by the batchers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use fred::types::scripts::Script;

use fred::types::config::{ClusterDiscoveryPolicy, ServerConfig, TlsConfig, TlsConnector};

use super::batch::{Batcher, Batchers};
use crate::config::{RedisTarget, StoreConfig};
use crate::id::RoomId;
use crate::ops::metrics::{STORE_COMMANDS, STORE_ERRORS, STORE_LATENCY};
use crate::store::keys::RoomKeys;
use crate::store::StoreError;

/// The PEM files of a TLS connection to Redis (all optional: the system's roots verify the
/// server, and no client certificate is sent).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Certificate authorities that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate chain.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// rustls settings from `files`: the given CAs (else the system's), the server's name checked
/// against its certificate (an IP address as an IP SAN), a client certificate when given. A
/// server whose certificate does not verify is refused at the handshake, and the error says
/// `invalid peer certificate`.
fn tls_config(files: &TlsFiles) -> Result<TlsConfig, String> {
    let roots = crate::tls::roots(files.ca.as_deref(), "tls_ca_file")?;
    let client = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => Some(crate::tls::ClientCert { cert, key }),
        _ => None,
    };
    let config = crate::tls::client_config(roots, client)?;
    Ok(TlsConfig::from(TlsConnector::from(config)))
}

/// Redis-backed store. Clone is cheap; all clones share one connection pool.
#[derive(Clone)]
pub struct RedisStore {
    pub(super) pool: Pool,
    pub(super) healthy: Arc<AtomicBool>,
    /// The last connection error (a refused TLS certificate, a refused password, a host that
    /// does not answer), so "unavailable" can say why.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Replicas that must confirm acknowledged writes (`store.durable_acks`).
    durable_acks: u32,
    /// A Redis Cluster: `WAIT` goes to the master that ran the write.
    clustered: bool,
    command_timeout: Duration,
    batchers: Arc<Batchers>,
}

/// Starts `client`'s connection task again each time it ends with an error (see
/// [`RedisStore::connect`]); returns when it ends cleanly (the pool quit).
async fn keep_connected(client: Client, mut handle: fred::types::ConnectHandle) {
    loop {
        match handle.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis client stopped; connecting it again");
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis client task failed; connecting it again");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        handle = client.connect();
    }
}

/// Most calls one coalesced script run takes: bounds a batch's time inside Redis (well under a
/// millisecond) and the reply size.
const MAX_BATCH: usize = 128;

/// Batches of one room (or sale) in flight at once. Redis runs one script at a time, so a second
/// batch would only wait inside Redis; holding it here instead lets it grow, and on a shared
/// core that measured 20% more joins per second than one batch per pool connection.
const IN_FLIGHT: usize = 1;

impl RedisStore {
    /// Builds the pool for `target` and starts connecting in the background. Never waits for
    /// Redis: a store that is down at start makes the node unready, and it recovers when Redis
    /// comes up. A Sentinel target follows the master through failovers; a cluster target
    /// follows MOVED / ASK redirections and topology changes.
    pub fn connect(
        target: &RedisTarget,
        tls: &TlsFiles,
        pool_size: usize,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let bad = |e: String| StoreError::Unavailable(format!("bad store settings: {e}"));
        let mut config = match target {
            RedisTarget::Single { url } => {
                Config::from_url(url).map_err(|e| bad(format!("redis_url: {e}")))?
            }
            RedisTarget::Cluster {
                nodes,
                username,
                password,
                ..
            } => Config {
                server: ServerConfig::Clustered {
                    hosts: nodes
                        .iter()
                        .map(|(h, p)| Server::new(h.as_str(), *p))
                        .collect(),
                    policy: ClusterDiscoveryPolicy::default(),
                },
                username: username.clone(),
                password: password.clone(),
                ..Config::default()
            },
            RedisTarget::Sentinel {
                master,
                nodes,
                password,
                sentinel_password,
            } => Config {
                server: ServerConfig::Sentinel {
                    hosts: nodes
                        .iter()
                        .map(|(h, p)| Server::new(h.as_str(), *p))
                        .collect(),
                    service_name: master.clone(),
                    username: None,
                    password: sentinel_password.clone(),
                },
                password: password.clone(),
                ..Config::default()
            },
        };
        config.tls = if target.tls() {
            Some(tls_config(tls).map_err(bad)?)
        } else {
            None
        };
        config.fail_fast = false;
        let pool = Builder::from_config(config)
            .with_performance_config(|perf| {
                perf.default_command_timeout = command_timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = command_timeout;
                conn.internal_command_timeout = command_timeout;
                // A write that may have run must not be replayed blindly on another connection.
                conn.max_command_attempts = 1;
                // Redirections (MOVED / ASK) during resharding and failover are followed; they
                // are not a failed attempt of the command.
                conn.max_redirections = 16;
            })
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build_pool(pool_size)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let last_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        for client in pool.clients() {
            let last = last_error.clone();
            // Logged once per distinct cause, not once per reconnection attempt. The listener
            // tasks run until the pool quits (dropping a handle detaches, it does not stop).
            drop(client.on_error(move |(error, server)| {
                let last = last.clone();
                async move {
                    let text = match server {
                        Some(s) => format!("{s}: {error}"),
                        None => error.to_string(),
                    };
                    let mut held = last.lock().unwrap_or_else(|p| p.into_inner());
                    if held.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "redis connection failed");
                        *held = Some(text);
                    }
                    Ok(())
                }
            }));
            let last = last_error.clone();
            drop(client.on_reconnect(move |_| {
                let last = last.clone();
                async move {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    Ok(())
                }
            }));
        }
        // Reconnection runs inside each client's connection task, which ends when the pool
        // quits (Ok). fred also ends it with an error when a redirection cannot be followed
        // (an ASK during resharding meets a command that may not be sent twice: "Max attempts
        // reached"), and the client would then stay dead: every later command times out. So a
        // task that ends with an error is started again.
        for (client, handle) in pool.clients().iter().cloned().zip(pool.connect_pool()) {
            tokio::spawn(keep_connected(client, handle));
        }
        Ok(Self {
            pool,
            healthy: Arc::new(AtomicBool::new(false)),
            last_error,
            durable_acks: 0,
            clustered: matches!(target, RedisTarget::Cluster { .. }),
            command_timeout,
            batchers: Arc::default(),
        })
    }

    /// The Redis store `config` names, or `None` for the embedded store.
    pub fn from_config(
        config: &StoreConfig,
        pool_size: usize,
        command_timeout: Duration,
    ) -> Result<Option<Self>, StoreError> {
        let Some(target) = config.redis() else {
            return Ok(None);
        };
        let tls = TlsFiles {
            ca: config.tls_ca_file.clone(),
            cert: config.tls_cert_file.clone(),
            key: config.tls_key_file.clone(),
        };
        let mut store = Self::connect(&target, &tls, pool_size, command_timeout)?;
        store.durable_acks = config.durable_acks;
        Ok(Some(store))
    }

    /// Waits until every connection is up (or fails after `timeout`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        tokio::time::timeout(timeout, self.pool.wait_for_connect())
            .await
            .map_err(|_| {
                StoreError::Unavailable(match self.last_connection_error() {
                    Some(e) => format!("timed out connecting to redis: {e}"),
                    None => "timed out connecting to redis".into(),
                })
            })?
            .map_err(|e| self.fail(e))
    }

    /// Length of a stream (order events, coupon log).
    pub(super) async fn stream_len(&self, key: &str) -> Result<u64, StoreError> {
        self.run(self.pool.next().xlen::<u64, _>(key)).await
    }

    /// Every entry of stream `key`, oldest first, as its fields.
    pub(super) async fn stream_entries(
        &self,
        key: &str,
    ) -> Result<Vec<crate::store::sale::StreamEntry>, StoreError> {
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .run(self.pool.next().xrange(key, "-", "+", None))
            .await?;
        Ok(entries.into_iter().map(|(_, fields)| fields).collect())
    }

    /// Sends one command: counts it, maps a failure to unavailable or protocol, and keeps the
    /// readiness flag truthful. Every store call goes through here.
    pub(super) async fn run<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        metrics::counter!(STORE_COMMANDS).increment(1);
        let value = command.await.map_err(|e| self.fail(e))?;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(value)
    }

    /// Sets fields of a room's meta hash (lifecycle state, live settings).
    pub(super) async fn hset_meta(
        &self,
        room: &RoomId,
        fields: Vec<(&str, String)>,
    ) -> Result<(), StoreError> {
        let key = RoomKeys::new(room).key("meta");
        self.run(self.pool.next().hset::<(), _, _>(key, fields))
            .await
    }

    /// Runs a script whose effect is acknowledged to a shopper (purchase, coupon, transfer,
    /// admission): with `durable_acks` = N it then sends `WAIT N` on the same connection and
    /// fails as unavailable unless N replicas confirmed the write, so a success survives a
    /// master failover. The write did run on the master: the caller's retry (same key, same
    /// ticket) finds it instead of repeating it.
    pub(super) async fn eval_acked(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        if self.durable_acks == 0 {
            return self.eval(script, keys, args).await;
        }
        let client = self.pool.next();
        // Every key of a script shares one slot: the first names the master it runs on.
        let slot = keys.first().map(|k| ClusterRouting::hash_key(k.as_bytes()));
        let started = std::time::Instant::now();
        let result = self
            .run(script.evalsha_with_reload::<Value, _, _>(client, keys, args))
            .await;
        let result = match result {
            Ok(value) => {
                let timeout_ms = (self.command_timeout.as_millis() as i64 * 3 / 4).max(1);
                let wanted = i64::from(self.durable_acks);
                let acked: i64 = if self.clustered {
                    // The same client keeps one connection per master, so WAIT on the master
                    // that owns the slot (after any redirection the write followed) covers it.
                    let master = slot.and_then(|slot| {
                        client
                            .cached_cluster_state()
                            .and_then(|s| s.get_server(slot).cloned())
                    });
                    let Some(master) = master else {
                        return Err(StoreError::Unavailable(
                            "the cluster's layout is not known yet; the write may have run".into(),
                        ));
                    };
                    self.run(client.with_cluster_node(master).wait(wanted, timeout_ms))
                        .await?
                } else {
                    self.run(client.wait(wanted, timeout_ms)).await?
                };
                if acked < wanted {
                    Err(StoreError::Unavailable(format!(
                        "only {acked} of {wanted} replicas confirmed the write within \
                         {timeout_ms} ms; it may not survive a failover"
                    )))
                } else {
                    Ok(value)
                }
            }
            Err(e) => Err(e),
        };
        metrics::histogram!(STORE_LATENCY).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(STORE_ERRORS).increment(1);
        }
        result
    }

    /// Why the last connection attempt failed, if one did.
    pub fn last_connection_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fail(&self, e: Error) -> StoreError {
        // A command that found no connection to write to (the server just went away) fails with
        // kind Unknown before the pool notices; `is_connected` is true while any pool client
        // still reads connected, so it cannot be relied on to catch that case.
        let unavailable = matches!(
            e.kind(),
            ErrorKind::IO
                | ErrorKind::Timeout
                | ErrorKind::Canceled
                | ErrorKind::Backpressure
                | ErrorKind::Routing
                // No cluster layout yet (a client started again, or the cluster is settling).
                | ErrorKind::Cluster
        ) || e.details().starts_with("Failed to route command")
            // The client's connection task ended with the command in flight (it is started
            // again, see `keep_connected`): whether the command ran is unknown.
            || e.details() == "channel closed"
            // fred gave up writing it (its connection was being replaced, as in a resharding).
            || e.details().starts_with("Too many failed write attempts")
            // A failover or resync in progress: the command did not run; retrying later works.
            || ["CLUSTERDOWN", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN"]
                .iter()
                .any(|code| e.details().starts_with(code))
            || !self.pool.is_connected();
        if unavailable {
            self.healthy.store(false, Ordering::Relaxed);
            match self
                .last_connection_error()
                .filter(|_| !self.pool.is_connected())
            {
                Some(cause) => {
                    StoreError::Unavailable(format!("{e} (last connection error: {cause})"))
                }
                None => StoreError::Unavailable(e.to_string()),
            }
        } else {
            StoreError::Protocol(e.to_string())
        }
    }

    pub(super) async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let result = self
            .run(script.evalsha_with_reload::<Value, _, _>(self.pool.next(), keys, args))
            .await;
        metrics::histogram!(STORE_LATENCY).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(STORE_ERRORS).increment(1);
        }
        result
    }

    /// A handle for a dispatcher task: same connections, but it does not hold the dispatchers
    /// themselves (that would keep them, and their tasks, alive forever).
    fn for_dispatcher(&self) -> RedisStore {
        RedisStore {
            batchers: Arc::default(),
            ..self.clone()
        }
    }

    /// The dispatcher of one room's (or sale's) calls of one operation, made on first use.
    pub(super) fn batcher<K, Q, R, F, Fut>(
        &self,
        map: impl Fn(&Batchers) -> &DashMap<K, Arc<Batcher<Q, R>>>,
        key: &K,
        run: F,
    ) -> Arc<Batcher<Q, R>>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        Q: Send + 'static,
        R: Send + 'static,
        F: Fn(RedisStore, K, Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>>
            + Send
            + 'static,
    {
        let batchers = map(&self.batchers);
        if let Some(b) = batchers.get(key) {
            return b.clone();
        }
        batchers
            .entry(key.clone())
            .or_insert_with(|| {
                let (store, key) = (self.for_dispatcher(), key.clone());
                let run = Arc::new(run);
                Arc::new(Batcher::spawn(MAX_BATCH, IN_FLIGHT, move |calls| {
                    run(store.clone(), key.clone(), calls)
                }))
            })
            .clone()
    }
}
