//! Wiring: builds the store, keys, rooms and listeners from a validated config, runs the pacer
//! loops, and shuts everything down in order (stop accepting, drain, flush liveness records).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::limits::{self, Limits};
use crate::http::proxy::{Proxy, ProxyError};
use crate::http::state::{AppState, LiveState, ReloadHandle};
use crate::http::{serve, ConnectionRules, Listener};
use crate::ops::metrics;
use crate::pass::{KeyError, PassIssuer, PassKeys, TicketSigner, UserTokens};
use crate::queue::group::Groups;
use crate::queue::pow::Challenges;
use crate::queue::{Rooms, StockGate};
use crate::sale::{Coupons, Sales};
use crate::store::{MemoryStore, RedisStore, SaleStore, Store, StoreError};
use crate::supervisor::Supervisor;
use crate::tls::ServerCerts;
use crate::webhooks::Webhooks;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pass signing key could not be loaded or created.
    #[error("pass signing key: {0}")]
    Key(#[from] KeyError),
    /// The store could not be set up.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A room's proxy settings could not be used (e.g. its page template became unreadable).
    #[error("{0}")]
    Proxy(#[from] ProxyError),
    /// The public listener's certificate could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from the config.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl AppState {
    /// Builds the state: store (Redis when `redis_url` or `[store.sentinel]` is set, else
    /// embedded), keys, rooms.
    /// Creates a development key when the key file is missing and the config allows it.
    pub fn from_config(config: Config) -> Result<AppState, StartError> {
        let (store, sale_store): (Arc<dyn Store>, Arc<dyn SaleStore>) =
            match RedisStore::from_config(
                &config.store,
                config.store.pool_size,
                Duration::from_millis(config.store.command_timeout_ms),
            )? {
                Some(redis) => {
                    let redis = Arc::new(redis);
                    (redis.clone(), redis)
                }
                None => {
                    let memory = Arc::new(MemoryStore::new());
                    (memory.clone(), memory)
                }
            };
        let (keys, created) = PassKeys::load_or_create(
            &config.passes.signing_key_file,
            config.passes.algorithm,
            config.passes.generate_missing_key,
        )?;
        if created {
            tracing::warn!(
                path = %config.passes.signing_key_file.display(),
                kid = keys.kid(),
                "generated a DEVELOPMENT pass signing key; use `rushgate keygen` and set \
                 passes.generate_missing_key = false in production"
            );
        }
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let rooms = Rooms::new(&config.rooms);
        let sales = Sales::new(&config.sales);
        for sale in sales.iter() {
            if let Some(room) = rooms.get(&sale.config.room) {
                room.set_stock_gate(StockGate::UNKNOWN);
            }
        }
        Ok(AppState {
            limits: Limits::new(&config.limits, config.server.trusted_nets()),
            webhooks: Webhooks::new(&config.webhooks),
            rooms,
            sales,
            coupons: Coupons::new(&config.coupons),
            groups: Groups::new(&config.groups),
            sale_store,
            passes: PassIssuer::new(keys, &config.passes.issuer, &config.passes.audience),
            tickets: TicketSigner::new(config.passes.ticket_secret.0.as_bytes()),
            pow: Challenges::new(config.passes.ticket_secret.0.as_bytes()),
            user_tokens: UserTokens::from_config(&config.identity),
            store,
            metrics: metrics::install(),
            proxy: Proxy::from_config(&config)?,
            event_streams: Arc::new(tokio::sync::Semaphore::new(config.server.max_event_streams)),
            event_streams_by_client: Arc::default(),
            certificate: match &config.server.tls {
                Some(tls) => Some(
                    ServerCerts::load(&tls.cert_file, &tls.key_file).map_err(StartError::Tls)?,
                ),
                None => None,
            },
            reload: None,
            draining: Arc::default(),
            config: Arc::new(config),
        })
    }
}

/// A running server: its bound addresses, its state, and the handle to stop it.
pub struct App {
    /// Where the public listener is bound.
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    /// The state the server started with (tests reach the store and rooms through it).
    pub state: AppState,
    /// The state new requests run on (the same until a reload swaps it).
    pub live: LiveState,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl App {
    /// Binds both listeners and starts serving and pacing. Returns once the listeners are bound.
    /// Without a config file, hot reload is refused.
    pub async fn start(config: Config) -> Result<App, StartError> {
        Self::start_with_file(config, None).await
    }

    /// Like [`App::start`]; `path` is the file hot reloads read (SIGHUP, `POST /admin/v1/reload`).
    pub async fn start_with_file(config: Config, path: Option<PathBuf>) -> Result<App, StartError> {
        let mut state = AppState::from_config(config)?;
        let (reload, requests) = ReloadHandle::channel();
        state.reload = Some(reload);
        let config = state.config.clone();
        let public = bind(&config.server.listen).await?;
        let admin = bind(&config.server.admin_listen).await?;
        let (public_addr, admin_addr) = (
            local(&public, &config.server.listen)?,
            local(&admin, &config.server.admin_listen)?,
        );
        let (shutdown, rx) = watch::channel(false);
        let live: LiveState = Arc::new(ArcSwap::from_pointee(state.clone()));
        let mut tasks = JoinSet::new();
        let (public_rules, admin_rules) = connection_rules(&config, &state)?;
        tasks.spawn(serve(
            public,
            Listener::Public,
            live.clone(),
            rx.clone(),
            public_rules,
        ));
        tasks.spawn(serve(
            admin,
            Listener::Admin,
            live.clone(),
            rx.clone(),
            admin_rules,
        ));
        let supervisor = Supervisor::start(live.clone(), path, rx.clone());
        tasks.spawn(supervisor.run(requests));
        tasks.spawn(state.webhooks.clone().run(state.store.clone(), rx.clone()));
        tasks.spawn(metrics::upkeep(state.metrics.clone(), rx.clone()));
        tasks.spawn(limits::upkeep(state.limits.clone(), rx.clone()));
        if let Some(tokens) = state.user_tokens.clone().filter(UserTokens::has_jwks) {
            let every = Duration::from_secs(config.identity.jwks_refresh_secs);
            tasks.spawn(refresh_user_keys(tokens, every, rx.clone()));
        }
        tasks.spawn(health_probe(state.store.clone(), rx));
        tracing::info!(version = env!("CARGO_PKG_VERSION"), %public_addr, %admin_addr, rooms = state.rooms.iter().count(), "rushgate serving");
        Ok(App {
            public_addr,
            admin_addr,
            state,
            live,
            shutdown,
            tasks,
        })
    }

    /// The state new requests run on now.
    pub fn current(&self) -> Arc<AppState> {
        self.live.load_full()
    }

    /// Starts draining: `/readyz` answers 503 from now on, everything else is served as before
    /// (a load balancer takes the node out; shoppers' tickets work on every other node).
    pub fn drain(&self) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops accepting, drains in-flight requests (bounded by the grace period) and flushes the
    /// batched liveness records.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("rushgate stopped");
    }
}

/// Fetches the shop's key set at start and every `every` until shutdown. A failed fetch keeps
/// the keys fetched before (and is logged); tokens with an unknown `kid` fetch on their own.
async fn refresh_user_keys(tokens: UserTokens, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match tokens.refresh_keys().await {
            Ok(n) => tracing::debug!(keys = n, "fetched the shop's user-token key set"),
            Err(e) => tracing::warn!(error = %e, "cannot fetch the shop's user-token key set"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully. SIGHUP reloads `path`.
pub async fn run(config: Config, path: PathBuf) -> Result<(), StartError> {
    let app = App::start_with_file(config, Some(path)).await?;
    if let Some(reload) = app.state.reload.clone() {
        tokio::spawn(reload_on_sighup(reload));
    }
    if shutdown_signal().await == Signal::Terminate {
        let drain = Duration::from_secs(app.state.config.server.drain_seconds);
        tracing::info!(
            seconds = drain.as_secs(),
            "SIGTERM: draining (readyz answers 503, requests are still served)"
        );
        app.drain();
        tokio::select! {
            _ = tokio::time::sleep(drain) => {}
            // A second signal stops at once (an operator in a hurry).
            _ = shutdown_signal() => {}
        }
    }
    tracing::info!("shutting down: in-flight requests finish");
    app.shutdown().await;
    Ok(())
}

/// The rules of both listeners: deadlines from `[server]`, TLS on the public one when
/// configured, and connection caps that fit the open-file limit (raised first).
fn connection_rules(
    config: &Config,
    state: &AppState,
) -> Result<(ConnectionRules, ConnectionRules), StartError> {
    let server = &config.server;
    let open_files = raise_open_files();
    let public_cap = public_cap(config, open_files);
    if public_cap < server.max_connections {
        tracing::warn!(
            open_files,
            configured = server.max_connections,
            max_connections = public_cap,
            "server.max_connections lowered to fit the open-file limit (room kept for the admin \
             listener, the store and the shop); raise the limit (ulimit -n, LimitNOFILE) to serve more"
        );
    }
    let tls = match &state.certificate {
        Some(certs) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            certs.server_config().map_err(StartError::Tls)?,
        ))),
        None => None,
    };
    let public = ConnectionRules {
        max_connections: public_cap,
        head_timeout: Duration::from_secs(server.head_timeout_seconds),
        body_timeout: Duration::from_secs(server.body_timeout_seconds),
        idle_timeout: Duration::from_secs(server.idle_timeout_seconds),
        grace: Duration::from_secs(server.shutdown_grace_seconds),
        tls,
    };
    let admin = ConnectionRules {
        max_connections: server.admin_max_connections,
        tls: None,
        ..public.clone()
    };
    Ok((public, admin))
}

/// Raises the soft open-file limit as far as the system allows (the hard limit, or with the
/// privilege to raise that, `fs.nr_open`) and returns the limit in force.
fn raise_open_files() -> u64 {
    use rlimit::Resource;
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 1024;
    };
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    if ceiling > hard && Resource::NOFILE.set(ceiling, ceiling).is_ok() {
        return ceiling;
    }
    if hard > soft && Resource::NOFILE.set(hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The public listener's cap under `open_files`: what is left after the admin listener, the
/// store's connections, idle connections and tunnels to each shop and a margin for files and
/// webhooks;
/// halved when rooms proxy to a shop (a forwarded request holds a second socket).
fn public_cap(config: &Config, open_files: u64) -> usize {
    let proxied = || {
        config
            .rooms
            .iter()
            .filter(|r| r.upstream.as_deref().is_some_and(|u| u.starts_with("http")))
    };
    let shops = proxied().count();
    // Each open tunnel holds a shopper socket and a shop socket outside the listener's count.
    let tunnels: usize = proxied().map(|r| 2 * r.max_tunnels).sum();
    let reserve = config.server.admin_max_connections
        + 2 * config.store.pool_size
        + 256 * shops
        + tunnels
        + 256;
    let left = usize::try_from(open_files)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve);
    let per_connection = if shops > 0 { 2 } else { 1 };
    (left / per_connection)
        .max(1)
        .min(config.server.max_connections)
}

/// Pending connections the kernel may hold per listener (capped by `net.core.somaxconn`). The
/// default of 128 overflows in a burst of arrivals (a drop opening), and every dropped
/// handshake costs its client a one-second retransmission.
const ACCEPT_BACKLOG: u32 = 4_096;

async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    let failed = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let address: SocketAddr = addr
        .parse()
        .map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(failed)?;
    // As std and tokio do: a restarted node binds again at once.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(address).map_err(failed)?;
    socket.listen(ACCEPT_BACKLOG).map_err(failed)
}

fn local(listener: &TcpListener, addr: &str) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Keeps readiness truthful when no room traffic touches the store: pings every second.
async fn health_probe(store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => { let _ = store.ping().await; }
            _ = shutdown.changed() => return,
        }
    }
}

/// Reloads the configuration on every SIGHUP (outcome logged by the supervisor).
async fn reload_on_sighup(reload: ReloadHandle) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let _ = reload.reload().await;
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): stop now, gracefully.
    Interrupt,
    /// SIGTERM (an orchestrator): drain first, then stop.
    Terminate,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, saying which.
pub async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => Signal::Interrupt,
        _ = term => Signal::Terminate,
    }
}
