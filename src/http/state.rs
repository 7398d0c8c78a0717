//! What every request runs on: [`AppState`], the cheap handles of one configuration, and
//! [`LiveState`], the cell a hot reload swaps it in. The reload request itself travels through
//! [`ReloadHandle`] to the supervisor, which owns the loops and builds the next state.

use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::limits::Limits;
use crate::config::{join_problems, Config, Problem};
use crate::http::proxy::Proxy;
use crate::pass::{PassIssuer, TicketSigner, UserTokens};
use crate::queue::group::Groups;
use crate::queue::place::Places;
use crate::queue::pow::Challenges;
use crate::queue::{Room, Rooms};
use crate::sale::{Coupons, Sale, Sales};
use crate::store::{SaleStore, Store};
use crate::webhooks::Webhooks;

/// Cheap handles every request needs. Clone freely.
#[derive(Clone)]
pub struct AppState {
    /// The running configuration.
    pub config: Arc<Config>,
    /// Rooms with their cached state.
    pub rooms: Rooms,
    /// Room storage.
    pub store: Arc<dyn Store>,
    /// Sale and coupon storage (the same store as `store`).
    pub sale_store: Arc<dyn SaleStore>,
    /// Sales with their cached stock.
    pub sales: Sales,
    /// Coupon campaigns.
    pub coupons: Coupons,
    /// Groups of rooms a shopper waits in at once.
    pub groups: Groups,
    /// Pass signer / verifier.
    pub passes: PassIssuer,
    /// Ticket signer / verifier.
    pub tickets: TicketSigner,
    /// Proof-of-work challenges (keyed from the ticket secret).
    pub pow: Challenges,
    /// Verifier of the shop's user tokens (`None` without an `[identity]` key).
    pub user_tokens: Option<UserTokens>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// The reverse proxy to the shop (routes, page templates, pooled upstream client).
    pub proxy: Proxy,
    /// Per-client rate limits.
    pub limits: Limits,
    /// Operator alerts.
    pub webhooks: Webhooks,
    /// Slots of open event streams on this node (`server.max_event_streams`), shared by every
    /// state a reload builds.
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Event streams open per client address on this node (an entry only while one is open).
    pub event_streams_by_client: Arc<dashmap::DashMap<std::net::IpAddr, usize>>,
    /// The public listener's certificate when it serves TLS (a reload reads it again).
    pub certificate: Option<Arc<crate::tls::ServerCerts>>,
    /// Asks the supervisor for a hot reload (`None` before the server runs).
    pub reload: Option<ReloadHandle>,
    /// The node is draining before it stops: `/readyz` answers 503 while requests are still
    /// served. Shared by every state a reload builds.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The state every new request starts from; swapped whole on reload.
pub type LiveState = Arc<ArcSwap<AppState>>;

/// What a successful reload did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Rooms added.
    pub added_rooms: Vec<String>,
    /// Rooms whose settings changed.
    pub changed_rooms: Vec<String>,
    /// Rooms no longer in the file, now draining.
    pub draining_rooms: Vec<String>,
    /// Sales added, changed or removed (by id).
    pub sales: Vec<String>,
    /// Settings that changed in the file but need a restart (their old values stay).
    pub needs_restart: Vec<String>,
    /// The listener's certificate was read again (new connections use it).
    pub certificate_reloaded: bool,
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("reload refused: {}", join_problems(problems, "; "))]
pub struct ReloadRefused {
    /// Every problem found (serialized as their text, `field: message`).
    pub problems: Vec<Problem>,
}

impl ReloadRefused {
    /// A reload refused for one reason of the whole configuration.
    pub fn because(message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem::general(message)],
        }
    }
}

/// Where the supervisor sends the outcome of one reload request.
pub type ReloadReply = oneshot::Sender<Result<ReloadReport, ReloadRefused>>;

/// Asks the supervisor to reload. Cheap to clone; lives in [`AppState`]; the supervisor holds the receiving end.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadReply>,
}

impl ReloadHandle {
    /// A handle and the receiving end the supervisor consumes.
    pub fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadReply>) {
        let (tx, rx) = mpsc::channel(8);
        (ReloadHandle { tx }, rx)
    }

    /// Reloads the config file and waits for the outcome.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        let (reply, answer) = oneshot::channel();
        let gone = || ReloadRefused::because("the server is shutting down");
        self.tx.send(reply).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl AppState {
    /// The room `id`, or the `404 unknown-room` problem (the id echoed at most 64 chars).
    pub fn room(&self, id: &str) -> Result<&Arc<Room>, ApiError> {
        self.rooms
            .get(id)
            .ok_or_else(|| ApiError::UnknownRoom(id.chars().take(64).collect()))
    }

    /// The configured sale `id`, or the `404 unknown-sale` problem naming it.
    pub fn sale(&self, id: &str) -> Result<&Arc<Sale>, ApiError> {
        self.sales
            .get(id)
            .ok_or_else(|| ApiError::UnknownSale(id.chars().take(64).collect()))
    }

    /// The admission rules over this state's store, signers and store-outage rule.
    pub fn places(&self) -> Places<'_> {
        Places {
            store: &*self.store,
            tickets: &self.tickets,
            challenges: &self.pow,
            passes: &self.passes,
            groups: &self.groups,
            on_store_error: self.config.store.on_store_error,
            anonymous_joins: !self.config.identity.required,
        }
    }
}
