//! The per-sale background loop: read the stock counters into the node's cache every refresh
//! (so waiters learn "sold out" within one refresh) and sweep expired reservations back into
//! stock every second. Any number of nodes may sweep at once: the sweep script returns each
//! reservation's units exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Sale;
use crate::clock::now_ms;
use crate::config::WebhookEvent;
use crate::queue::{Room, StockGate};
use crate::store::sale::{SaleState, SaleStore};
use crate::store::StoreError;
use crate::webhooks::Webhooks;

/// Most reservations one sweep call expires (bounds the script's run time).
const SWEEP_BATCH: u64 = 1_000;
/// How often expired reservations are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sweeps due reservations (repeating while full batches come back), then refreshes the cache
/// and the stock gate of the sale's room.
pub async fn step(
    sale: &Sale,
    room: Option<&Room>,
    store: &dyn SaleStore,
    webhooks: &Webhooks,
    sweep: bool,
) -> Result<(), StoreError> {
    if sweep {
        while store.sweep(&sale.id, now_ms(), SWEEP_BATCH).await? == SWEEP_BATCH {}
    }
    let state = store.sale_state(&sale.id).await?;
    if let Some(before) = sale.cached_state() {
        alert_transitions(sale, &before, &state, webhooks);
    }
    sale.publish(state);
    if let Some(room) = room {
        room.set_stock_gate(StockGate {
            admit_cap: sale.admit_cap(&state),
            remaining: state.available,
            sold_out: state.sold_out(),
            restocks: state.restocks,
        });
    }
    Ok(())
}

/// Every node sees the same counters, so the ids below are the same on every node and the
/// webhook layer delivers each transition once.
fn alert_transitions(sale: &Sale, before: &SaleState, now: &SaleState, webhooks: &Webhooks) {
    let id = &sale.config.id;
    let data = serde_json::json!({
        "sale": id, "room": sale.config.room, "available": now.available,
        "reserved": now.reserved, "confirmed": now.confirmed, "total": now.total,
    });
    if now.sold_out() && !before.sold_out() {
        webhooks.emit(
            WebhookEvent::SaleSoldOut,
            format!("sale.sold_out:{id}:{}", now.total),
            data.clone(),
        );
    }
    if now.total > before.total {
        webhooks.emit(
            WebhookEvent::SaleRestocked,
            format!("sale.restocked:{id}:{}", now.total),
            data,
        );
    }
}

/// Creates the sale's stock record if this is the first node to see it, then runs [`step`]
/// every `every` until `shutdown` flips.
pub async fn run(
    sale: Arc<Sale>,
    room: Option<Arc<Room>>,
    store: Arc<dyn SaleStore>,
    webhooks: Webhooks,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut initialized = false;
    let mut last_sweep = Instant::now() - SWEEP_EVERY;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !initialized {
            match store.init_sale(&sale.id, sale.config.stock).await {
                Ok(created) => {
                    initialized = true;
                    if created {
                        tracing::info!(sale = %sale.config.id, stock = sale.config.stock, "sale stock created");
                    }
                }
                Err(_) => continue,
            }
        }
        let sweep = last_sweep.elapsed() >= SWEEP_EVERY;
        if sweep {
            last_sweep = Instant::now();
        }
        if let Err(e) = step(&sale, room.as_deref(), store.as_ref(), &webhooks, sweep).await {
            tracing::debug!(sale = %sale.config.id, error = %e, "sale refresh failed");
        }
    }
}
