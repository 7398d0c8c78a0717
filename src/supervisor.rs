//! The supervisor: runs every room's pacer and every sale's keeper, and applies hot reloads
//! (SIGHUP or `POST /admin/v1/reload`).
//!
//! A reload reads and validates the file, then builds the next [`AppState`] and swaps it in
//! atomically: requests that started before keep the state they started with, later ones see
//! the new one. Nothing shoppers hold is lost: places and passes live in the store; an
//! unchanged room or sale keeps its object (cache, buffers, loop); a changed one gets a new object
//! seeded with the old cache and a new loop (the old loop flushes its buffers and stops); a room
//! removed from the file drains (no new joins, everyone waiting admitted) instead of vanishing.
//! Settings that need new sockets or keys (listeners, store, passes, webhooks) are kept and
//! reported as needing a restart. A bad file changes nothing and every problem is reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Problem, ProcessEnv};
use crate::http::limits::{self, Limits};
use crate::http::proxy::Proxy;
use crate::http::state::{AppState, LiveState, ReloadRefused, ReloadReply, ReloadReport};
use crate::id::SaleId;
use crate::queue::group::Groups;
use crate::queue::{pacer, Room, Rooms, StockGate};
use crate::sale::{keeper, Coupons, Sale, Sales};
use crate::store::RoomStatus;

/// One running loop and the switch that stops it.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Owns the loops and the live state.
pub struct Supervisor {
    live: LiveState,
    path: Option<PathBuf>,
    every: Duration,
    pacers: HashMap<String, (Arc<Room>, Running)>,
    keepers: HashMap<String, (Arc<Sale>, Running)>,
    shutdown: watch::Receiver<bool>,
    /// This node's id in the store (its leases), random per start.
    node: Arc<str>,
}

impl Supervisor {
    /// Starts the loops of `live`'s rooms and sales. `path`: where reloads read from.
    pub fn start(live: LiveState, path: Option<PathBuf>, shutdown: watch::Receiver<bool>) -> Self {
        let state = live.load_full();
        let every = Duration::from_millis(state.config.store.refresh_ms);
        let mut sup = Supervisor {
            live,
            path,
            every,
            pacers: HashMap::new(),
            keepers: HashMap::new(),
            shutdown,
            node: uuid::Uuid::new_v4().simple().to_string().into(),
        };
        for room in state.rooms.iter() {
            sup.spawn_pacer(&state, room.clone());
        }
        for sale in state.sales.iter() {
            sup.spawn_keeper(&state, sale.clone());
        }
        sup
    }

    fn spawn_pacer(&mut self, state: &AppState, room: Arc<Room>) {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(pacer::run(
            room.clone(),
            state.store.clone(),
            state.webhooks.clone(),
            self.every,
            pacer::OutageRule {
                mode: state.config.store.on_store_error,
                lease_ms: state.config.store.capped_lease_seconds * 1000,
                node: self.node.clone(),
            },
            rx,
        ));
        self.pacers
            .insert(room.id.as_str().to_string(), (room, Running { stop, task }));
    }

    fn spawn_keeper(&mut self, state: &AppState, sale: Arc<Sale>) {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(keeper::run(
            sale.clone(),
            state.rooms.get(&sale.config.room).cloned(),
            state.sale_store.clone(),
            state.webhooks.clone(),
            self.every,
            rx,
        ));
        self.keepers
            .insert(sale.config.id.clone(), (sale, Running { stop, task }));
    }

    /// Serves reload requests until shutdown, then stops every loop (pacers flush their
    /// batched liveness records on the way out).
    pub async fn run(mut self, mut requests: mpsc::Receiver<ReloadReply>) {
        loop {
            tokio::select! {
                req = requests.recv() => match req {
                    Some(reply) => {
                        let outcome = self.reload().await;
                        match &outcome {
                            Ok(report) => tracing::info!(?report, "configuration reloaded"),
                            Err(e) => tracing::warn!(problems = ?e.problems, "configuration reload refused; keeping the running configuration"),
                        }
                        let _ = reply.send(outcome);
                    }
                    None => break,
                },
                _ = self.shutdown.changed() => break,
            }
        }
        for (_, (_, running)) in self.pacers.drain() {
            running.stop().await;
        }
        for (_, (_, running)) in self.keepers.drain() {
            running.stop().await;
        }
    }

    async fn reload(&mut self) -> Result<ReloadReport, ReloadRefused> {
        let refused = |problems| ReloadRefused { problems };
        let Some(path) = &self.path else {
            return Err(ReloadRefused::because(
                "this server was not started from a config file",
            ));
        };
        let mut next = Config::load(path, &ProcessEnv).map_err(|e| {
            refused(match e {
                crate::config::ConfigError::Invalid(problems) => problems,
                other => vec![Problem::general(other.to_string())],
            })
        })?;
        let old = self.live.load_full();
        let mut report = ReloadReport::default();
        keep_restart_only(&old.config, &mut next, &mut report);
        let proxy =
            Proxy::from_config_after(&next, &old.proxy).map_err(|e| refused(vec![e.problem]))?;
        // Read before anything changes: a certificate that does not load refuses the reload.
        let certificate = match &old.certificate {
            Some(certs) => Some(
                certs
                    .read_again()
                    .map_err(|e| refused(vec![Problem::new("server.tls", e)]))?,
            ),
            None => None,
        };

        // Rooms: keep unchanged objects, replace changed ones, drain removed ones.
        let mut rooms: HashMap<String, Arc<Room>> = HashMap::new();
        let mut restart = Vec::new();
        for cfg in &next.rooms {
            match old.rooms.get(&cfg.id) {
                Some(room) if same(&room.config, cfg) => {
                    rooms.insert(cfg.id.clone(), room.clone());
                }
                Some(room) => {
                    let fresh = Arc::new(Room::new(room.id.clone(), cfg.clone()));
                    fresh.publish(room.snapshot().as_ref().clone());
                    if let Some(gate) = room.stock_gate() {
                        fresh.set_stock_gate(gate);
                    }
                    report.changed_rooms.push(cfg.id.clone());
                    restart.push(fresh.clone());
                    rooms.insert(cfg.id.clone(), fresh);
                }
                None => {
                    let Some(id) = crate::id::RoomId::parse(&cfg.id) else {
                        continue;
                    };
                    let fresh = Arc::new(Room::new(id, cfg.clone()));
                    report.added_rooms.push(cfg.id.clone());
                    restart.push(fresh.clone());
                    rooms.insert(cfg.id.clone(), fresh);
                }
            }
        }
        for room in old.rooms.iter() {
            if !rooms.contains_key(room.id.as_str()) {
                if let Err(e) = old.store.set_status(&room.id, RoomStatus::Draining).await {
                    return Err(refused(vec![Problem::new(
                        "rooms",
                        format!("cannot drain removed room `{}`: {e}", room.id),
                    )]));
                }
                report.draining_rooms.push(room.id.as_str().to_string());
                rooms.insert(room.id.as_str().to_string(), room.clone());
            }
        }
        // Sales: the same rule; a sale's room gate follows the (possibly new) room object.
        let mut sales: HashMap<String, Arc<Sale>> = HashMap::new();
        let mut restart_sales = Vec::new();
        for cfg in &next.sales {
            let room_replaced = restart.iter().any(|r| r.id.as_str() == cfg.room);
            match old.sales.get(&cfg.id) {
                Some(sale) if same(&sale.config, cfg) && !room_replaced => {
                    sales.insert(cfg.id.clone(), sale.clone());
                }
                existing => {
                    let Some(id) = SaleId::parse(&cfg.id) else {
                        continue;
                    };
                    let fresh = Arc::new(Sale::new(id, cfg.clone()));
                    if let Some(state) = existing.and_then(|s| s.cached_state()) {
                        fresh.publish(state);
                    }
                    if let Some(room) = rooms.get(&cfg.room) {
                        if room.stock_gate().is_none() {
                            room.set_stock_gate(StockGate::UNKNOWN);
                        }
                    }
                    report.sales.push(cfg.id.clone());
                    restart_sales.push(fresh.clone());
                    sales.insert(cfg.id.clone(), fresh);
                }
            }
        }
        let removed_sales: Vec<String> = self
            .keepers
            .keys()
            .filter(|id| !sales.contains_key(*id))
            .cloned()
            .collect();
        report.sales.extend(removed_sales.iter().cloned());

        let limits = if same(&old.config.limits, &next.limits)
            && same(
                &old.config.server.trusted_proxies,
                &next.server.trusted_proxies,
            ) {
            old.limits.clone()
        } else {
            let fresh = Limits::new(&next.limits, next.server.trusted_nets());
            tokio::spawn(limits::upkeep(fresh.clone(), self.shutdown.clone()));
            fresh
        };
        let state = AppState {
            coupons: Coupons::new(&next.coupons),
            groups: Groups::new(&next.groups),
            config: Arc::new(next),
            rooms: Rooms::from_map(rooms),
            sales: Sales::from_map(sales),
            limits,
            proxy,
            ..(*old).clone()
        };

        // Swap first, then move the loops over: the new objects serve from their seeded caches.
        self.live.store(Arc::new(state.clone()));
        if let (Some(certs), Some(fresh)) = (&state.certificate, certificate) {
            certs.install(fresh);
            report.certificate_reloaded = true;
        }
        for room in restart {
            if let Some((old_room, running)) = self.pacers.remove(room.id.as_str()) {
                running.stop().await;
                // Its event streams end; their clients reconnect to the new room object.
                old_room.retire();
            }
            self.spawn_pacer(&state, room);
        }
        for id in removed_sales {
            if let Some((_, running)) = self.keepers.remove(&id) {
                running.stop().await;
            }
        }
        for sale in restart_sales {
            if let Some((_, running)) = self.keepers.remove(&sale.config.id) {
                running.stop().await;
            }
            self.spawn_keeper(&state, sale);
        }
        Ok(report)
    }
}

/// Equal as configured (compared through their serialized form).
fn same<T: Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Puts back the sections a running server cannot change, noting each that differed.
fn keep_restart_only(old: &Config, next: &mut Config, report: &mut ReloadReport) {
    let mut keep = |name: &str, differs: bool| {
        if differs {
            report.needs_restart.push(name.to_string());
        }
    };
    keep(
        "server",
        !same(&old.server.listen, &next.server.listen)
            || !same(&old.server.admin_listen, &next.server.admin_listen)
            || !same(&old.server.api_prefix, &next.server.api_prefix)
            || !same(&old.server.tls, &next.server.tls),
    );
    keep("store", !same(&old.store, &next.store));
    keep("passes", !same(&old.passes, &next.passes));
    keep("identity", !same(&old.identity, &next.identity));
    keep("webhooks", !same(&old.webhooks, &next.webhooks));
    keep("log", !same(&old.log, &next.log));
    let trusted = std::mem::take(&mut next.server.trusted_proxies);
    next.server = old.server.clone();
    next.server.trusted_proxies = trusted;
    next.store = old.store.clone();
    next.passes = old.passes.clone();
    next.identity = old.identity.clone();
    next.webhooks = old.webhooks.clone();
    next.log = old.log.clone();
}
