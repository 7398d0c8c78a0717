//! The purchase rules of a sale: a reservation taken by one atomic store operation (stock, the
//! per-user limit and the idempotency key checked together), the room told what was sold so
//! its admission cap and waiters' answers follow the stock at once, and the shop's confirm or
//! release of a reservation. Functions of the sale, the store and one `now`; no HTTP type.

use super::Sale;
use crate::id::ReservationId;
use crate::queue::Room;
use crate::store::sale::{PurchaseOutcome, ReservationState, SaleStore, SettleOutcome};
use crate::store::StoreError;

/// One purchase request, already checked at the edge.
#[derive(Debug, Clone, Copy)]
pub struct Order<'a> {
    /// The buyer: the identity the admission pass names.
    pub buyer: &'a str,
    /// The shop's user id the pass carries (`uid`), when the shop vouched for the buyer.
    pub user_id: Option<&'a str>,
    /// Units wanted (at least 1).
    pub quantity: u64,
    /// The client's idempotency key, `""` for none: a retry with the same key finds the same
    /// reservation instead of taking stock twice.
    pub idempotency_key: &'a str,
}

/// Reserves `order` in `sale` at `now`. On a new reservation the room behind the sale (when
/// given) learns the remaining stock and that the buyer bought, without a store round trip.
/// Every other outcome changed nothing.
pub async fn purchase(
    store: &dyn SaleStore,
    sale: &Sale,
    room: Option<&Room>,
    order: Order<'_>,
    now: u64,
) -> Result<PurchaseOutcome, StoreError> {
    // A keyed purchase's reservation is named from its key by the store; only one without a
    // key needs a fresh random id.
    let new_id = if order.idempotency_key.is_empty() {
        format!("{}.{}", sale.config.id, uuid::Uuid::new_v4().simple())
    } else {
        String::new()
    };
    let outcome = store
        .purchase(
            &sale.id,
            order.buyer,
            order.user_id.unwrap_or(""),
            order.quantity,
            order.idempotency_key,
            &sale.params,
            &new_id,
            now,
        )
        .await?;
    sale.count_purchase(outcome.label());
    if let (PurchaseOutcome::Reserved(r), Some(room)) = (&outcome, room) {
        room.note_sold(r.available, sale.admit_cap_for(r.available));
        // The buyer stops counting against the stock-aware admission cap once the pacer
        // records it (batched, before its next tick): no extra store round trip.
        room.note_buyer(order.buyer);
    }
    Ok(outcome)
}

/// Moves reservation `id` of `sale` to `target` (confirm or release) at `now`; a retry of a
/// transition that was made answers `Already`, one in another final state `Conflict`.
pub async fn settle(
    store: &dyn SaleStore,
    sale: &Sale,
    id: &ReservationId,
    target: ReservationState,
    now: u64,
) -> Result<SettleOutcome, StoreError> {
    store.settle(&sale.id, id.as_str(), target, now).await
}
