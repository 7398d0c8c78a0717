//! The purchase rules of a sale: a reservation taken by one atomic store operation (stock, the
//! per-user limit and the idempotency key checked together), the room told what was sold so
//! its admission cap and waiters' answers follow the stock at once, and the shop's confirm or
//! release of a reservation. Functions of the sale, the store and one `now`; no HTTP type.

use super::Sale;
use crate::id::ReservationId;
use crate::queue::Room;
use crate::store::sale::{
    keyed_reservation_id, PurchaseOutcome, ReservationState, SaleStore, SettleOutcome,
};
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

/// A purchase the store did not answer: it may have reserved all the same (a timed-out call
/// can still run, and a `WAIT` for replicas can time out after it ran). Repeating the order
/// with `idempotency_key` answers `reservation_id` if it was made and makes it otherwise, so
/// the buyer never holds two reservations for one order.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Uncertain {
    /// The failure.
    pub error: StoreError,
    /// The key to repeat the order with: the buyer's own, or one made for this order.
    pub idempotency_key: String,
    /// The reservation the order made, if it made one.
    pub reservation_id: String,
}

/// Reserves `order` in `sale` at `now`. On a new reservation, or a repeat that finds one, the
/// room behind the sale (when given) learns the remaining stock and that the buyer bought,
/// without a store round trip. Every other outcome changed nothing.
///
/// The reservation is named before the store is asked: an order without a key gets a random
/// one here, and its reservation the id that key names ([`keyed_reservation_id`]). The store
/// is sent the order as unkeyed (a new random key can have no reservation yet, so it skips
/// the lookup), and a failure returns the key: the retry sends it, and finds the
/// reservation.
pub async fn purchase(
    store: &dyn SaleStore,
    sale: &Sale,
    room: Option<&Room>,
    order: Order<'_>,
    now: u64,
) -> Result<PurchaseOutcome, Uncertain> {
    let made_key;
    let (sent_key, key, new_id) = if order.idempotency_key.is_empty() {
        made_key = uuid::Uuid::new_v4().simple().to_string();
        let id = keyed_reservation_id(&sale.id, order.buyer, &made_key);
        ("", made_key.as_str(), id)
    } else {
        // A keyed purchase's reservation is named from its key by the store.
        (order.idempotency_key, order.idempotency_key, String::new())
    };
    let outcome = match store
        .purchase(
            &sale.id,
            order.buyer,
            order.user_id.unwrap_or(""),
            order.quantity,
            sent_key,
            &sale.params,
            &new_id,
            now,
        )
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => {
            return Err(Uncertain {
                error,
                reservation_id: keyed_reservation_id(&sale.id, order.buyer, key),
                idempotency_key: key.to_string(),
            })
        }
    };
    sale.count_purchase(outcome.label());
    // A repeat that finds its reservation counts too: the first attempt may have run while its
    // answer was lost (a 503), so this is the first time the room hears of this buyer.
    if let (PurchaseOutcome::Reserved(r) | PurchaseOutcome::Existing(r), Some(room)) =
        (&outcome, room)
    {
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
