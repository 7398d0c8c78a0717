//! The per-room background loop: flush batched liveness records, tick the shared pacer in the
//! store, publish the new snapshot. Every node runs it; the token bucket lives in the store, so
//! any number of nodes admit in one global FIFO order at the configured rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::drops;
use super::eta::EtaEstimator;
use super::message::RoomMessage;
use super::room::Room;
use super::schedule::{rfc3339, Phase, Schedule};
use super::snapshot::Snapshot;
use crate::clock::now_ms;
use crate::config::{OnStoreError, WebhookEvent};
use crate::store::{RoomStatus, Store, StoreError};
use crate::webhooks::Webhooks;

/// One step: flush seen-records, tick, publish. On a store error the old snapshot stays (polls
/// keep being answered) and unflushed records are kept for the next step.
pub async fn step(
    room: &Room,
    store: &dyn Store,
    eta: &mut EtaEstimator,
) -> Result<(), StoreError> {
    flush_seen(room, store).await?;
    flush_buyers(room, store).await?;
    // Sessions admitted on the lease during an outage count before anyone else is admitted.
    reconcile_outage(room, store).await?;
    // A scheduled drop's seed commit and opening; the tick runs even if it fails, so polls
    // keep fresh state, and the error is reported after.
    let drop_step = super::drops::advance(room, store, now_ms()).await;
    let previous = room.snapshot();
    let state = store
        .tick(
            &room.id,
            &room.params_now(),
            now_ms(),
            previous.known_departed(),
        )
        .await?;
    let rates = eta.update(
        Instant::now(),
        state.admitted_total,
        state.waiting > 0,
        if matches!(state.status, RoomStatus::Open | RoomStatus::Draining) {
            room.configured_rate(&state)
        } else {
            0.0
        },
    );
    let revoked_total = state.revoked_total;
    let (rate, max_active) = room.settings_in_force(&state);
    let mut next = previous.next(state, rates);
    drop(previous);
    if next.message_is_stale() {
        learn_message(room, store, &mut next).await;
    }
    room.publish(next);
    learn_revocations(room, store, revoked_total).await?;
    renew_lease(room, store, rate, max_active).await?;
    drop_step
}

/// Records the sessions this node admitted on its lease during an outage (`capped`), if any,
/// and forgets them once the store has them.
async fn reconcile_outage(room: &Room, store: &dyn Store) -> Result<(), StoreError> {
    let pending = room.outage.pending();
    if pending.is_empty() {
        return Ok(());
    }
    let recorded = store
        .reconcile(
            &room.id,
            &room.outage.node(),
            &pending,
            &room.params_now(),
            now_ms(),
        )
        .await?;
    room.outage.recorded(&pending);
    tracing::info!(room = %room.id, admitted = pending.len(), recorded, "outage admissions recorded in the store");
    Ok(())
}

/// Renews the node's lease of a `capped` room (every second): its share of what the room
/// admits in the lease window, held back in the store for an outage.
async fn renew_lease(
    room: &Room,
    store: &dyn Store,
    rate: u32,
    max_active: u32,
) -> Result<(), StoreError> {
    let now = now_ms();
    if !room.outage.renew_due(now) {
        return Ok(());
    }
    let want = room.outage.want(rate, max_active);
    let ttl = room.outage.store_ttl(room.params.session_ms);
    let lease = store
        .lease(
            &room.id,
            &room.outage.node(),
            want,
            &room.params_now(),
            ttl,
            now,
        )
        .await?;
    room.outage.renewed(lease, rate, now);
    Ok(())
}

/// Reads the room's live message into `next` (the tick said its version moved), before the
/// snapshot is published, so the streams the publish wakes see it. A failed read keeps the
/// message this node has and is tried again at the next refresh; a stored message this node
/// cannot read counts as none (logged), so it is not read again at every refresh.
async fn learn_message(room: &Room, store: &dyn Store, next: &mut Snapshot) {
    match store.message(&room.id).await {
        Ok((version, text)) => {
            let message = text.as_deref().map(RoomMessage::decode);
            if let Some(None) = message {
                tracing::warn!(room = %room.id, version, "the room's live message in the store is not readable; showing the configured one");
            }
            next.learn_message(version, message.flatten());
        }
        Err(e) => {
            tracing::debug!(room = %room.id, error = %e, "could not read the room's live message; trying again at the next refresh");
        }
    }
}

/// Most feed pages read in one refresh: a node far behind (just started, or back from an
/// outage) catches up over a few refreshes instead of stalling one.
const REVOCATION_PAGES_PER_STEP: usize = 8;

/// Reads the revocation feed entries this node has not applied (only when the tick says there
/// are any) and forgets expired ones.
async fn learn_revocations(room: &Room, store: &dyn Store, total: u64) -> Result<(), StoreError> {
    let now = now_ms();
    room.revoked.prune(now);
    room.sessions.sweep(now);
    for _ in 0..REVOCATION_PAGES_PER_STEP {
        let from = room.revoked.applied();
        if from >= total {
            break;
        }
        let (entries, next) = store.revocations(&room.id, from).await?;
        room.revoked.apply(&entries);
        room.revoked.set_applied(next);
        if next <= from {
            // Everything left was trimmed: the feed's total is all there is to know.
            room.revoked.set_applied(total);
            break;
        }
    }
    Ok(())
}

/// Records the buffered buyers (one script call per refresh, when there are any).
pub async fn flush_buyers(room: &Room, store: &dyn Store) -> Result<(), StoreError> {
    let buyers = room.take_buyers();
    if buyers.is_empty() {
        return Ok(());
    }
    if let Err(e) = store.mark_buyers(&room.id, &buyers).await {
        room.restore_buyers(buyers);
        return Err(e);
    }
    Ok(())
}

/// Writes the buffered seen-records (one script call per liveness interval, usually one).
pub async fn flush_seen(room: &Room, store: &dyn Store) -> Result<(), StoreError> {
    let mut batch = room.take_seen();
    let intervals: Vec<u64> = batch.keys().copied().collect();
    for interval in intervals {
        let Some(seqs) = batch.get(&interval) else {
            continue;
        };
        if let Err(e) = store
            .mark_alive(&room.id, &room.params, interval, seqs)
            .await
        {
            room.restore_seen(batch);
            return Err(e);
        }
        batch.remove(&interval);
    }
    Ok(())
}

/// Announces a scheduled room's phase changes (`room.prequeue_opened`, `room.opened`). Every
/// node sees the same change at the same configured time; the ids (room + configured time) are
/// the same on every node, so the webhook layer delivers each once.
fn announce(room: &Room, from: Phase, to: Phase, webhooks: &Webhooks) {
    let schedule = Schedule::of(&room.config);
    let snap = room.snapshot();
    let commitment = snap.state.seed.as_deref().and_then(drops::seed_commitment);
    let data = serde_json::json!({
        "room": room.id.as_str(),
        "opens_at": schedule.opens_at.and_then(rfc3339),
        "seed_sha256": commitment,
    });
    match (from, to) {
        (Phase::NotYetOpen, Phase::Prequeue) => webhooks.emit(
            WebhookEvent::RoomPrequeueOpened,
            format!(
                "room.prequeue_opened:{}:{}",
                room.id,
                schedule.prequeue_opens_at.unwrap_or(0)
            ),
            data,
        ),
        (Phase::NotYetOpen | Phase::Prequeue, Phase::Open) => webhooks.emit(
            WebhookEvent::RoomOpened,
            format!("room.opened:{}:{}", room.id, schedule.opens_at.unwrap_or(0)),
            data,
        ),
        _ => {}
    }
}

/// The store's outage rule for a room's pacer.
#[derive(Debug, Clone)]
pub struct OutageRule {
    /// `store.on_store_error`.
    pub mode: OnStoreError,
    /// `capped`: the lease window, ms.
    pub lease_ms: u64,
    /// The node's id, naming its leases in the store (one per running node).
    pub node: Arc<str>,
}

/// Runs [`step`] every `every` until `shutdown` flips, then flushes once more.
pub async fn run(
    room: Arc<Room>,
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    every: Duration,
    outage: OutageRule,
    mut shutdown: watch::Receiver<bool>,
) {
    room.outage
        .configure(outage.mode, outage.lease_ms, outage.node);
    let mut eta = EtaEstimator::default();
    // Phase changes seen while running are announced; the phase at start is not (a restart
    // must not announce an opening that happened long ago).
    let mut phase = Schedule::of(&room.config).phase(now_ms());
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => break,
        }
        // The phase is read before the step and announced after it: the step that crosses
        // into the pre-queue commits the drop's seed (its clock reads later than this one), so
        // the announcement can carry the commitment.
        let now_phase = Schedule::of(&room.config).phase(now_ms());
        let stepped = step(&room, store.as_ref(), &mut eta).await;
        if now_phase != phase {
            announce(&room, phase, now_phase, &webhooks);
            phase = now_phase;
        }
        match &stepped {
            Ok(()) => room.outage.store_up(),
            Err(StoreError::Unavailable(_)) => room.outage.store_down(now_ms()),
            Err(_) => {}
        }
        match stepped {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(room = %room.id, "store reachable again; room state refreshing");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(room = %room.id, error = %e, "room refresh failed; serving cached state");
            }
            Err(_) => {}
        }
    }
    if let Err(e) = flush_buyers(&room, store.as_ref()).await {
        tracing::warn!(room = %room.id, error = %e, "could not record buyers at shutdown");
    }
    if let Err(e) = flush_seen(&room, store.as_ref()).await {
        tracing::warn!(room = %room.id, error = %e, "could not flush liveness records at shutdown");
    }
}
