//! Store conformance suite: every test drives the `Store` / `SaleStore` traits with explicit
//! time and runs, with the same exact assertions, against the embedded `MemoryStore` and a
//! `RedisStore` on a private redis-server. A disagreement between the two is a bug.

use std::sync::Arc;
use std::time::Duration;

use rushgate::id::{CampaignId, RoomId, SaleId};
use rushgate::store::{MemoryStore, RedisStore, SaleStore, Store};

use crate::harness;

/// One store under test, seen as both traits, plus the redis-server behind it (if any). The
/// stores are declared first so they drop before the server is killed.
pub struct Fixture {
    rooms: Arc<dyn Store>,
    sales: Arc<dyn SaleStore>,
    _redis: Option<harness::RedisServer>,
}

impl Fixture {
    /// A fresh store of `kind` (for Redis, on its own redis-server).
    pub async fn of(kind: harness::StoreKind) -> Fixture {
        match kind {
            harness::StoreKind::Memory => Self::memory().await,
            harness::StoreKind::Redis => Self::redis().await,
        }
    }

    async fn memory() -> Fixture {
        let store = Arc::new(MemoryStore::new());
        Fixture {
            rooms: store.clone(),
            sales: store,
            _redis: None,
        }
    }

    async fn redis() -> Fixture {
        let server = harness::RedisServer::start().await;
        let target = rushgate::config::RedisTarget::Single { url: server.url() };
        let tls = rushgate::store::TlsFiles::default();
        let store = RedisStore::connect(&target, &tls, 4, Duration::from_secs(10))
            .expect("redis store builds");
        store
            .wait_connected(Duration::from_secs(10))
            .await
            .expect("redis store connects");
        let store = Arc::new(store);
        Fixture {
            rooms: store.clone(),
            sales: store,
            _redis: Some(server),
        }
    }

    /// The room store.
    pub fn rooms(&self) -> &dyn Store {
        &*self.rooms
    }

    /// The room store as an `Arc`, for tests that share it with spawned tasks.
    pub fn shared_rooms(&self) -> Arc<dyn Store> {
        self.rooms.clone()
    }

    /// The sale store (an `Arc` so tests can share it with spawned tasks).
    pub fn sales(&self) -> Arc<dyn SaleStore> {
        self.sales.clone()
    }
}

mod drops;
mod groups;
mod holders;
mod leases;
mod rooms;
mod sales;

/// A simulated "now": one hour ahead of the wall clock, aligned to a minute. Redis expires the
/// liveness bitmaps on its own (real) clock at times computed from this one, so simulated time
/// must stay ahead of real time for the whole test.
pub fn t0() -> u64 {
    (rushgate::clock::now_ms() / 60_000 + 60) * 60_000
}

/// A fresh room id.
pub fn room_id() -> RoomId {
    RoomId::parse(&harness::room_id()).expect("valid room id")
}

/// A fresh sale id.
pub fn sale_id() -> SaleId {
    SaleId::parse(&harness::room_id()).expect("valid sale id")
}

/// A fresh coupon-campaign id.
pub fn campaign_id() -> CampaignId {
    CampaignId::parse(&harness::room_id()).expect("valid campaign id")
}
