//! The `SaleStore` trait: stock with reservations (purchase, settle, sweep, add_stock) and
//! first-come coupons, with the invariant `available + reserved + confirmed == total` checked
//! after every step, and two concurrency tests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rushgate::store::sale::{
    keyed_reservation_id, CouponOutcome, PurchaseOutcome, Reservation, ReservationState,
    SaleParams, SaleState, SaleStore, SettleOutcome,
};
use rushgate::store::StoreError;

use rushgate::id::SaleId;

use super::{campaign_id, sale_id, t0};
use crate::both_stores;

/// How long a reservation holds its units.
const HOLD: u64 = 60_000;

fn params(per_user_limit: u32) -> SaleParams {
    SaleParams {
        per_user_limit,
        reservation_ms: HOLD,
    }
}

fn counters(available: u64, reserved: u64, confirmed: u64, total: u64) -> SaleState {
    SaleState {
        available,
        reserved,
        confirmed,
        total,
        restocks: 0,
    }
}

fn rsv(id: &str, quantity: u64, expires_ms: u64, available: u64) -> Reservation {
    Reservation {
        id: id.to_string(),
        quantity,
        expires_ms,
        available,
        state: ReservationState::Reserved,
    }
}

/// Reads the counters, checks the invariant and that they are `want`.
async fn check(s: &dyn SaleStore, sale: &SaleId, want: SaleState) {
    let st = s.sale_state(sale).await.unwrap();
    assert_eq!(
        st.available + st.reserved + st.confirmed,
        st.total,
        "invariant: {st:?}"
    );
    assert_eq!(st, want);
}

#[allow(clippy::too_many_arguments)]
async fn buy(
    s: &dyn SaleStore,
    sale: &SaleId,
    user: &str,
    quantity: u64,
    key: &str,
    p: &SaleParams,
    id: &str,
    now: u64,
) -> PurchaseOutcome {
    s.purchase(sale, user, "", quantity, key, p, id, now)
        .await
        .unwrap()
}

async fn settle(
    s: &dyn SaleStore,
    sale: &SaleId,
    id: &str,
    target: ReservationState,
    now: u64,
) -> SettleOutcome {
    s.settle(sale, id, target, now).await.unwrap()
}

use ReservationState::{Confirmed, Expired, Released, Reserved};

both_stores!(sales:
    init_sale_creates_once,
    purchase_reserves_units,
    idempotency_key_returns_the_same_reservation,
    per_user_limit_counts_held_units,
    sold_out_and_insufficient,
    settle_confirm_and_release_exactly_once,
    settle_after_expiry,
    sweep_expires_due_reservations_once,
    concurrent_sweeps_return_units_once,
    sweeps_pass_settled_reservations_of_a_batch,
    add_stock_adds_and_removes_unsold_units,
    unknown_sale_is_empty_until_initialised,
    coupons_issue_each_serial_once,
    concurrent_purchases_sell_exactly_the_stock,
    concurrent_coupon_claims_issue_each_serial_once,
);

async fn init_sale_creates_once(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    check(s, &sale, SaleState::default()).await;
    assert!(s.init_sale(&sale, 10).await.unwrap());
    check(s, &sale, counters(10, 0, 0, 10)).await;
    assert!(!s.init_sale(&sale, 99).await.unwrap());
    check(s, &sale, counters(10, 0, 0, 10)).await;
    // A live sale is never reset by a second init.
    let r = format!("{sale}.r1");
    buy(s, &sale, "u1", 4, "", &params(5), &r, t0()).await;
    assert!(!s.init_sale(&sale, 10).await.unwrap());
    check(s, &sale, counters(6, 4, 0, 10)).await;
    // An empty sale exists too.
    let empty = sale_id();
    assert!(s.init_sale(&empty, 0).await.unwrap());
    assert!(!s.init_sale(&empty, 5).await.unwrap());
    check(s, &empty, SaleState::default()).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 1);
    assert_eq!(s.order_events(&empty).await.unwrap(), 0);
}

async fn purchase_reserves_units(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(5);
    s.init_sale(&sale, 10).await.unwrap();
    // With a key the reservation is named after it; without, after the id the caller gives.
    let (r1, r2) = (
        keyed_reservation_id(&sale, "u1", "k1"),
        format!("{sale}.r2"),
    );
    assert_eq!(
        buy(s, &sale, "u1", 2, "k1", &p, &format!("{sale}.unused"), t).await,
        PurchaseOutcome::Reserved(rsv(&r1, 2, t + HOLD, 8))
    );
    check(s, &sale, counters(8, 2, 0, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 1);
    assert_eq!(
        buy(s, &sale, "u2", 3, "", &p, &r2, t + 7).await,
        PurchaseOutcome::Reserved(rsv(&r2, 3, t + 7 + HOLD, 5))
    );
    check(s, &sale, counters(5, 5, 0, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 2);
    assert!(!s.sale_state(&sale).await.unwrap().sold_out());
}

async fn idempotency_key_returns_the_same_reservation(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(5);
    s.init_sale(&sale, 10).await.unwrap();
    let id = |n: u32| format!("{sale}.r{n}");
    let (u1_k, u2_k, u1_k2) = (
        keyed_reservation_id(&sale, "u1", "k"),
        keyed_reservation_id(&sale, "u2", "k"),
        keyed_reservation_id(&sale, "u1", "k2"),
    );
    assert_eq!(
        buy(s, &sale, "u1", 2, "k", &p, &id(1), t).await,
        PurchaseOutcome::Reserved(rsv(&u1_k, 2, t + HOLD, 8))
    );
    // A retry (even with another id, quantity or time) is the same reservation; no stock.
    let existing = PurchaseOutcome::Existing(rsv(&u1_k, 2, t + HOLD, 8));
    assert_eq!(
        buy(s, &sale, "u1", 2, "k", &p, &id(90), t + 5).await,
        existing
    );
    assert_eq!(
        buy(s, &sale, "u1", 3, "k", &p, &id(91), t + 6).await,
        existing
    );
    check(s, &sale, counters(8, 2, 0, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 1);
    // The key is per user; another key is another purchase; no key means no deduplication.
    assert_eq!(
        buy(s, &sale, "u2", 2, "k", &p, &id(2), t + 10).await,
        PurchaseOutcome::Reserved(rsv(&u2_k, 2, t + 10 + HOLD, 6))
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "k2", &p, &id(3), t + 11).await,
        PurchaseOutcome::Reserved(rsv(&u1_k2, 1, t + 11 + HOLD, 5))
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(4), t + 12).await,
        PurchaseOutcome::Reserved(rsv(&id(4), 1, t + 12 + HOLD, 4))
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(5), t + 13).await,
        PurchaseOutcome::Reserved(rsv(&id(5), 1, t + 13 + HOLD, 3))
    );
    check(s, &sale, counters(3, 7, 0, 10)).await;
    // u1 is at its limit, but a retry still answers with its reservation.
    assert_eq!(
        buy(s, &sale, "u1", 1, "new", &p, &id(6), t + 14).await,
        PurchaseOutcome::LimitReached { held: 5 }
    );
    assert_eq!(
        buy(s, &sale, "u1", 2, "k", &p, &id(92), t + 15).await,
        PurchaseOutcome::Existing(rsv(&u1_k, 2, t + HOLD, 3))
    );
    // A retry reports the reservation's current state.
    assert_eq!(
        settle(s, &sale, &u1_k, Confirmed, t + 20).await,
        SettleOutcome::Done(Confirmed)
    );
    assert_eq!(
        settle(s, &sale, &u1_k2, Released, t + 21).await,
        SettleOutcome::Done(Released)
    );
    assert_eq!(
        buy(s, &sale, "u1", 2, "k", &p, &id(93), t + 22).await,
        PurchaseOutcome::Existing(Reservation {
            state: Confirmed,
            ..rsv(&u1_k, 2, t + HOLD, 4)
        })
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "k2", &p, &id(94), t + 23).await,
        PurchaseOutcome::Existing(Reservation {
            state: Released,
            ..rsv(&u1_k2, 1, t + 11 + HOLD, 4)
        })
    );
    check(s, &sale, counters(4, 4, 2, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 7);
}

async fn per_user_limit_counts_held_units(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(3);
    s.init_sale(&sale, 10).await.unwrap();
    let id = |n: u32| format!("{sale}.r{n}");
    assert!(matches!(
        buy(s, &sale, "u1", 2, "", &p, &id(1), t).await,
        PurchaseOutcome::Reserved(_)
    ));
    assert_eq!(
        buy(s, &sale, "u1", 2, "", &p, &id(2), t).await,
        PurchaseOutcome::LimitReached { held: 2 }
    );
    assert!(matches!(
        buy(s, &sale, "u1", 1, "", &p, &id(3), t).await,
        PurchaseOutcome::Reserved(_)
    ));
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(4), t).await,
        PurchaseOutcome::LimitReached { held: 3 }
    );
    assert_eq!(
        buy(s, &sale, "u2", 4, "", &p, &id(5), t).await,
        PurchaseOutcome::LimitReached { held: 0 }
    );
    assert!(matches!(
        buy(s, &sale, "u2", 3, "", &p, &id(6), t).await,
        PurchaseOutcome::Reserved(_)
    ));
    check(s, &sale, counters(4, 6, 0, 10)).await;
    // Confirmed units still count; released ones no longer do.
    assert_eq!(
        settle(s, &sale, &id(1), Confirmed, t + 1).await,
        SettleOutcome::Done(Confirmed)
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(7), t + 2).await,
        PurchaseOutcome::LimitReached { held: 3 }
    );
    assert_eq!(
        settle(s, &sale, &id(3), Released, t + 3).await,
        SettleOutcome::Done(Released)
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(8), t + 4).await,
        PurchaseOutcome::Reserved(rsv(&id(8), 1, t + 4 + HOLD, 4))
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(9), t + 5).await,
        PurchaseOutcome::LimitReached { held: 3 }
    );
    check(s, &sale, counters(4, 4, 2, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 6);
}

async fn sold_out_and_insufficient(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(5);
    s.init_sale(&sale, 3).await.unwrap();
    let id = |n: u32| format!("{sale}.r{n}");
    assert_eq!(
        buy(s, &sale, "u1", 2, "", &p, &id(1), t).await,
        PurchaseOutcome::Reserved(rsv(&id(1), 2, t + HOLD, 1))
    );
    assert_eq!(
        buy(s, &sale, "u2", 2, "x", &p, &id(2), t).await,
        PurchaseOutcome::Insufficient { available: 1 }
    );
    check(s, &sale, counters(1, 2, 0, 3)).await;
    // A failed purchase does not record its idempotency key.
    let u2_x = keyed_reservation_id(&sale, "u2", "x");
    assert_eq!(
        buy(s, &sale, "u2", 1, "x", &p, &id(3), t).await,
        PurchaseOutcome::Reserved(rsv(&u2_x, 1, t + HOLD, 0))
    );
    assert_eq!(
        buy(s, &sale, "u3", 1, "", &p, &id(4), t).await,
        PurchaseOutcome::SoldOut { reserved: 3 }
    );
    assert!(
        !s.sale_state(&sale).await.unwrap().sold_out(),
        "units may come back"
    );
    // The per-user limit is checked before stock.
    assert_eq!(
        buy(s, &sale, "u3", 6, "", &p, &id(5), t).await,
        PurchaseOutcome::LimitReached { held: 0 }
    );
    // A zero quantity is refused by both stores.
    assert!(matches!(
        s.purchase(&sale, "u3", "", 0, "", &p, &id(6), t).await,
        Err(StoreError::Protocol(_))
    ));
    check(s, &sale, counters(0, 3, 0, 3)).await;
    assert_eq!(
        settle(s, &sale, &id(1), Confirmed, t + 1).await,
        SettleOutcome::Done(Confirmed)
    );
    assert_eq!(
        buy(s, &sale, "u3", 1, "", &p, &id(7), t + 2).await,
        PurchaseOutcome::SoldOut { reserved: 1 }
    );
    assert_eq!(
        settle(s, &sale, &u2_x, Released, t + 3).await,
        SettleOutcome::Done(Released)
    );
    assert_eq!(
        buy(s, &sale, "u3", 1, "", &p, &id(8), t + 4).await,
        PurchaseOutcome::Reserved(rsv(&id(8), 1, t + 4 + HOLD, 0))
    );
    check(s, &sale, counters(0, 1, 2, 3)).await;
    assert_eq!(
        settle(s, &sale, &id(8), Confirmed, t + 5).await,
        SettleOutcome::Done(Confirmed)
    );
    assert!(s.sale_state(&sale).await.unwrap().sold_out());
    assert_eq!(
        buy(s, &sale, "u4", 1, "", &p, &id(9), t + 6).await,
        PurchaseOutcome::SoldOut { reserved: 0 }
    );
    check(s, &sale, counters(0, 0, 3, 3)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 6);
}

async fn settle_confirm_and_release_exactly_once(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(10);
    s.init_sale(&sale, 10).await.unwrap();
    let (r1, r2) = (format!("{sale}.r1"), format!("{sale}.r2"));
    buy(s, &sale, "u1", 2, "", &p, &r1, t).await;
    buy(s, &sale, "u2", 3, "", &p, &r2, t).await;
    check(s, &sale, counters(5, 5, 0, 10)).await;

    assert_eq!(
        settle(s, &sale, &r1, Confirmed, t + 1).await,
        SettleOutcome::Done(Confirmed)
    );
    check(s, &sale, counters(5, 3, 2, 10)).await;
    assert_eq!(
        settle(s, &sale, &r1, Confirmed, t + 2).await,
        SettleOutcome::Already(Confirmed)
    );
    assert_eq!(
        settle(s, &sale, &r1, Released, t + 3).await,
        SettleOutcome::Conflict(Confirmed)
    );
    assert_eq!(
        settle(s, &sale, &r1, Expired, t + HOLD + 1).await,
        SettleOutcome::Conflict(Confirmed)
    );
    check(s, &sale, counters(5, 3, 2, 10)).await;

    assert_eq!(
        settle(s, &sale, &r2, Released, t + 4).await,
        SettleOutcome::Done(Released)
    );
    check(s, &sale, counters(8, 0, 2, 10)).await;
    assert_eq!(
        settle(s, &sale, &r2, Released, t + 5).await,
        SettleOutcome::Already(Released)
    );
    assert_eq!(
        settle(s, &sale, &r2, Confirmed, t + 6).await,
        SettleOutcome::Conflict(Released)
    );
    assert_eq!(
        settle(s, &sale, &r2, Expired, t + HOLD + 1).await,
        SettleOutcome::Conflict(Released)
    );
    // Nothing due any more: a sweep finds nothing.
    assert_eq!(s.sweep(&sale, t + HOLD + 1, 100).await.unwrap(), 0);
    check(s, &sale, counters(8, 0, 2, 10)).await;

    assert_eq!(
        settle(s, &sale, "nope", Confirmed, t).await,
        SettleOutcome::Unknown
    );
    assert_eq!(
        settle(s, &sale_id(), &r1, Confirmed, t).await,
        SettleOutcome::Unknown
    );
    assert_eq!(s.order_events(&sale).await.unwrap(), 4);
}

async fn settle_after_expiry(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(3);
    s.init_sale(&sale, 10).await.unwrap();
    let id = |n: u32| format!("{sale}.r{n}");
    buy(s, &sale, "u1", 2, "", &p, &id(1), t).await;
    buy(s, &sale, "u1", 1, "", &p, &id(2), t).await;
    buy(s, &sale, "u2", 1, "", &p, &id(3), t).await;
    check(s, &sale, counters(6, 4, 0, 10)).await;
    // Expiring before the time is refused.
    assert_eq!(
        settle(s, &sale, &id(3), Expired, t + HOLD - 1).await,
        SettleOutcome::Conflict(Reserved)
    );
    // Confirming just in time works; at the expiry it expires instead (units back).
    assert_eq!(
        settle(s, &sale, &id(2), Confirmed, t + HOLD - 1).await,
        SettleOutcome::Done(Confirmed)
    );
    assert_eq!(
        settle(s, &sale, &id(1), Confirmed, t + HOLD).await,
        SettleOutcome::Conflict(Expired)
    );
    check(s, &sale, counters(8, 1, 1, 10)).await;
    assert_eq!(
        settle(s, &sale, &id(1), Confirmed, t + HOLD + 1).await,
        SettleOutcome::Conflict(Expired)
    );
    assert_eq!(
        settle(s, &sale, &id(1), Expired, t + HOLD + 1).await,
        SettleOutcome::Already(Expired)
    );
    assert_eq!(
        settle(s, &sale, &id(1), Released, t + HOLD + 1).await,
        SettleOutcome::Conflict(Expired)
    );
    assert_eq!(
        settle(s, &sale, &id(3), Expired, t + HOLD).await,
        SettleOutcome::Done(Expired)
    );
    check(s, &sale, counters(9, 0, 1, 10)).await;
    assert_eq!(s.sweep(&sale, t + HOLD, 100).await.unwrap(), 0);
    // u1's expired units no longer count against the limit; the confirmed one does.
    assert_eq!(
        buy(s, &sale, "u1", 2, "", &p, &id(4), t + HOLD).await,
        PurchaseOutcome::Reserved(rsv(&id(4), 2, t + 2 * HOLD, 7))
    );
    assert_eq!(
        buy(s, &sale, "u1", 1, "", &p, &id(5), t + HOLD).await,
        PurchaseOutcome::LimitReached { held: 3 }
    );
    check(s, &sale, counters(7, 2, 1, 10)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 7);
}

async fn sweep_expires_due_reservations_once(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    let p = params(10);
    s.init_sale(&sale, 20).await.unwrap();
    // Every purchase here has the key "k": user `u{n}`'s reservation is named after it.
    let id = |n: u64| keyed_reservation_id(&sale, &format!("u{n}"), "k");
    for n in 1..=4u64 {
        let at = t + (n - 1) * 1_000;
        assert_eq!(
            buy(s, &sale, &format!("u{n}"), n, "k", &p, &id(n), at).await,
            PurchaseOutcome::Reserved(rsv(&id(n), n, at + HOLD, 20 - n * (n + 1) / 2))
        );
    }
    check(s, &sale, counters(10, 10, 0, 20)).await;
    assert_eq!(
        settle(s, &sale, &id(2), Confirmed, t + 1_500).await,
        SettleOutcome::Done(Confirmed)
    );
    // Nothing due yet.
    assert_eq!(s.sweep(&sale, t + HOLD - 1, 100).await.unwrap(), 0);
    check(s, &sale, counters(10, 8, 2, 20)).await;
    // r1 and r3 are due (r2 is confirmed); `max` bounds one call.
    let now = t + HOLD + 2_000;
    assert_eq!(s.sweep(&sale, now, 1).await.unwrap(), 1);
    check(s, &sale, counters(11, 7, 2, 20)).await;
    assert_eq!(s.sweep(&sale, now, 100).await.unwrap(), 1);
    check(s, &sale, counters(14, 4, 2, 20)).await;
    assert_eq!(s.sweep(&sale, now, 100).await.unwrap(), 0);
    assert_eq!(s.sweep(&sale, now, 100).await.unwrap(), 0);
    check(s, &sale, counters(14, 4, 2, 20)).await;
    assert_eq!(s.sweep(&sale, t + HOLD + 3_000, 100).await.unwrap(), 1);
    assert_eq!(s.sweep(&sale, t + 10 * HOLD, 100).await.unwrap(), 0);
    check(s, &sale, counters(18, 0, 2, 20)).await;
    // Swept reservations are final.
    assert_eq!(
        buy(s, &sale, "u1", 1, "k", &p, &id(90), now).await,
        PurchaseOutcome::Existing(Reservation {
            state: Expired,
            ..rsv(&id(1), 1, t + HOLD, 18)
        })
    );
    assert_eq!(
        settle(s, &sale, &id(1), Expired, now).await,
        SettleOutcome::Already(Expired)
    );
    assert_eq!(
        settle(s, &sale, &id(3), Confirmed, now).await,
        SettleOutcome::Conflict(Expired)
    );
    // And their units no longer count against the buyer.
    assert!(matches!(
        buy(s, &sale, "u4", 4, "k2", &params(4), &id(5), now).await,
        PurchaseOutcome::Reserved(_)
    ));
    check(s, &sale, counters(14, 4, 2, 20)).await;
    // 5 purchases, 1 confirm, 3 expiries.
    assert_eq!(s.order_events(&sale).await.unwrap(), 9);
}

async fn concurrent_sweeps_return_units_once(s: Arc<dyn SaleStore>) {
    let sale = sale_id();
    let t = t0();
    let p = params(5);
    s.init_sale(&sale, 100).await.unwrap();
    let mut units = 0;
    for i in 0..40u64 {
        let qty = 1 + i % 3;
        units += qty;
        let out = buy(
            &*s,
            &sale,
            &format!("u{i}"),
            qty,
            "",
            &p,
            &format!("{sale}.r{i}"),
            t + i * 10,
        )
        .await;
        assert!(matches!(out, PurchaseOutcome::Reserved(_)), "{out:?}");
    }
    assert_eq!(units, 79);
    check(&*s, &sale, counters(21, 79, 0, 100)).await;
    let now = t + HOLD + 1_000;
    let sweepers: Vec<_> = (0..8)
        .map(|_| {
            let (s, sale) = (s.clone(), sale.clone());
            tokio::spawn(async move {
                let mut swept = 0;
                loop {
                    let n = s.sweep(&sale, now, 3).await.unwrap();
                    assert!(n <= 3);
                    if n == 0 {
                        return swept;
                    }
                    swept += n;
                }
            })
        })
        .collect();
    let mut total = 0;
    for sweeper in futures::future::join_all(sweepers).await {
        total += sweeper.unwrap();
    }
    assert_eq!(total, 40, "each reservation expires exactly once");
    check(&*s, &sale, counters(100, 0, 0, 100)).await;
    assert_eq!(s.sweep(&sale, now, 100).await.unwrap(), 0);
    assert_eq!(s.order_events(&sale).await.unwrap(), 80);
}

async fn sweeps_pass_settled_reservations_of_a_batch(s: Arc<dyn SaleStore>) {
    let sale = sale_id();
    let t = t0();
    s.init_sale(&sale, 200).await.unwrap();
    // 60 purchases at one instant, all at once: the Redis store runs them in a few batches,
    // each with one expiry entry for all its reservations.
    let buys: Vec<_> = (0..60u64)
        .map(|i| {
            let (s, sale) = (s.clone(), sale.clone());
            tokio::spawn(async move {
                let id = format!("{sale}.r{i}");
                buy(&*s, &sale, &format!("u{i}"), 1, "", &params(5), &id, t).await
            })
        })
        .collect();
    for out in futures::future::join_all(buys).await {
        let out = out.unwrap();
        assert!(matches!(out, PurchaseOutcome::Reserved(_)), "{out:?}");
    }
    check(&*s, &sale, counters(140, 60, 0, 200)).await;
    // Settled ones keep their place in the expiry entries; the sweep must pass over them.
    for i in (0..60).step_by(2) {
        let id = format!("{sale}.r{i}");
        assert_eq!(
            settle(&*s, &sale, &id, Confirmed, t + 10).await,
            SettleOutcome::Done(Confirmed)
        );
    }
    for i in (1..60).step_by(4) {
        let id = format!("{sale}.r{i}");
        assert_eq!(
            settle(&*s, &sale, &id, Released, t + 10).await,
            SettleOutcome::Done(Released)
        );
    }
    check(&*s, &sale, counters(155, 15, 30, 200)).await;
    assert_eq!(s.sweep(&sale, t + HOLD - 1, 100).await.unwrap(), 0);
    // Two per call: an entry is split, the rest goes back and is found by the next call. A
    // call may find none while some are due (past a long run of settled ids), so the loop
    // stops on the counters, not on a zero.
    let now = t + HOLD;
    let mut swept = 0;
    for _ in 0..200 {
        let n = s.sweep(&sale, now, 2).await.unwrap();
        assert!(n <= 2, "a call expired {n} > max");
        swept += n;
        if s.sale_state(&sale).await.unwrap().reserved == 0 {
            break;
        }
    }
    assert_eq!(swept, 15, "each reserved one expires exactly once");
    check(&*s, &sale, counters(170, 0, 30, 200)).await;
    assert_eq!(s.sweep(&sale, t + 10 * HOLD, 100).await.unwrap(), 0);
    for i in 0..60u64 {
        let id = format!("{sale}.r{i}");
        let want = match i {
            _ if i % 2 == 0 => Confirmed,
            _ if i % 4 == 1 => Released,
            _ => Expired,
        };
        assert_eq!(
            settle(&*s, &sale, &id, want, now).await,
            SettleOutcome::Already(want),
            "r{i}"
        );
    }
    // 60 purchases, 45 settlements, 15 expiries.
    assert_eq!(s.order_events(&sale).await.unwrap(), 120);
}

async fn add_stock_adds_and_removes_unsold_units(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    s.init_sale(&sale, 5).await.unwrap();
    assert_eq!(s.add_stock(&sale, 5, t).await.unwrap(), (5, 10));
    check(s, &sale, counters(10, 0, 0, 10)).await;
    let r1 = format!("{sale}.r1");
    buy(s, &sale, "u1", 3, "", &params(5), &r1, t).await;
    check(s, &sale, counters(7, 3, 0, 10)).await;
    assert_eq!(s.add_stock(&sale, -2, t).await.unwrap(), (-2, 5));
    check(s, &sale, counters(5, 3, 0, 8)).await;
    // A removal takes at most what is available: reserved units are untouched.
    assert_eq!(s.add_stock(&sale, -100, t).await.unwrap(), (-5, 0));
    check(s, &sale, counters(0, 3, 0, 3)).await;
    assert_eq!(s.add_stock(&sale, -1, t).await.unwrap(), (0, 0));
    assert_eq!(s.add_stock(&sale, 0, t).await.unwrap(), (0, 0));
    check(s, &sale, counters(0, 3, 0, 3)).await;
    assert_eq!(
        settle(s, &sale, &r1, Confirmed, t).await,
        SettleOutcome::Done(Confirmed)
    );
    assert_eq!(s.add_stock(&sale, -1, t).await.unwrap(), (0, 0));
    check(s, &sale, counters(0, 0, 3, 3)).await;
    // Units added to a sold-out sale (nothing available or reserved) count a restock; the
    // additions above did not (units were available or reserved).
    assert_eq!(s.add_stock(&sale, 4, t).await.unwrap(), (4, 4));
    let restocked = SaleState {
        restocks: 1,
        ..counters(4, 0, 3, 7)
    };
    check(s, &sale, restocked).await;
    assert_eq!(s.add_stock(&sale, 1, t).await.unwrap(), (1, 5));
    assert_eq!(s.add_stock(&sale, -1, t).await.unwrap(), (-1, 4));
    check(s, &sale, restocked).await;
    // Re-initialising never resets live stock.
    assert!(!s.init_sale(&sale, 99).await.unwrap());
    check(s, &sale, restocked).await;
    // Only changes are events: +5, purchase, -2, -5, confirm, +4, +1, -1.
    assert_eq!(s.order_events(&sale).await.unwrap(), 8);
}

async fn unknown_sale_is_empty_until_initialised(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let sale = sale_id();
    let t = t0();
    check(s, &sale, SaleState::default()).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 0);
    // Operations on a sale that was never created change nothing...
    assert_eq!(
        buy(s, &sale, "u1", 1, "k", &params(2), &format!("{sale}.r1"), t).await,
        PurchaseOutcome::SoldOut { reserved: 0 }
    );
    assert_eq!(
        buy(s, &sale, "u1", 3, "k", &params(2), &format!("{sale}.r2"), t).await,
        PurchaseOutcome::LimitReached { held: 0 }
    );
    assert_eq!(s.add_stock(&sale, -3, t).await.unwrap(), (0, 0));
    assert_eq!(s.add_stock(&sale, 0, t).await.unwrap(), (0, 0));
    assert_eq!(s.sweep(&sale, t, 100).await.unwrap(), 0);
    assert_eq!(
        settle(s, &sale, &format!("{sale}.r1"), Confirmed, t).await,
        SettleOutcome::Unknown
    );
    check(s, &sale, SaleState::default()).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), 0);
    // ...so the first init still creates it.
    assert!(s.init_sale(&sale, 7).await.unwrap());
    check(s, &sale, counters(7, 0, 0, 7)).await;
    // Adding stock to a sale that does not exist creates its record.
    let other = sale_id();
    assert_eq!(s.add_stock(&other, 3, t).await.unwrap(), (3, 3));
    check(s, &other, counters(3, 0, 0, 3)).await;
    assert!(!s.init_sale(&other, 10).await.unwrap());
    check(s, &other, counters(3, 0, 0, 3)).await;
    assert_eq!(s.order_events(&other).await.unwrap(), 1);
}

async fn coupons_issue_each_serial_once(s: Arc<dyn SaleStore>) {
    let s = &*s;
    let c = campaign_id();
    let t = t0();
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), 0);
    let claim = |user: &'static str, limit: u64| {
        let c = c.clone();
        async move { s.claim_coupon(&c, user, "", limit, t).await.unwrap() }
    };
    assert_eq!(claim("u1", 3).await, CouponOutcome::New(1));
    assert_eq!(claim("u1", 3).await, CouponOutcome::Existing(1));
    assert_eq!(claim("u2", 3).await, CouponOutcome::New(2));
    assert_eq!(claim("u3", 3).await, CouponOutcome::New(3));
    assert_eq!(claim("u4", 3).await, CouponOutcome::Exhausted);
    assert_eq!(claim("u2", 3).await, CouponOutcome::Existing(2));
    assert_eq!(claim("u4", 3).await, CouponOutcome::Exhausted);
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), 3);
    // Holders keep their serial even when the limit drops; a raised limit issues the next.
    assert_eq!(claim("u3", 1).await, CouponOutcome::Existing(3));
    assert_eq!(claim("u4", 4).await, CouponOutcome::New(4));
    assert_eq!(claim("u5", 4).await, CouponOutcome::Exhausted);
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), 4);
    // Campaigns are independent; a limit of zero issues nothing.
    let none = campaign_id();
    assert_eq!(
        s.claim_coupon(&none, "u1", "", 0, t).await.unwrap(),
        CouponOutcome::Exhausted
    );
    assert_eq!(s.coupon_log_len(&none).await.unwrap(), 0);
    let other = campaign_id();
    assert_eq!(
        s.claim_coupon(&other, "u4", "", 2, t).await.unwrap(),
        CouponOutcome::New(1)
    );
    assert_eq!(s.coupon_log_len(&other).await.unwrap(), 1);
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), 4);
}

async fn concurrent_purchases_sell_exactly_the_stock(s: Arc<dyn SaleStore>) {
    const STOCK: u64 = 300;
    const USERS: u64 = 500;
    const LIMIT: u32 = 2;
    let sale = sale_id();
    let t = t0();
    let p = params(LIMIT);
    assert!(s.init_sale(&sale, STOCK).await.unwrap());
    // Each user tries four times; attempts i and i + 1000 share an idempotency key.
    let tasks: Vec<_> = (0..2_000u64)
        .map(|i| {
            let (s, sale) = (s.clone(), sale.clone());
            tokio::spawn(async move {
                let user = format!("u{}", i % USERS);
                let key = format!("k{}", i % 1_000);
                let id = format!("{sale}.{i}");
                let out = s
                    .purchase(&sale, &user, "", 1, &key, &p, &id, t + i)
                    .await
                    .unwrap();
                (user, out)
            })
        })
        .collect();
    let results: Vec<(String, PurchaseOutcome)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let mut owner: HashMap<String, String> = HashMap::new();
    let mut held: HashMap<String, u64> = HashMap::new();
    let mut units = 0;
    for (user, out) in &results {
        if let PurchaseOutcome::Reserved(r) = out {
            assert_eq!(r.quantity, 1);
            assert_eq!(r.state, Reserved);
            assert!(owner.insert(r.id.clone(), user.clone()).is_none(), "{r:?}");
            *held.entry(user.clone()).or_default() += r.quantity;
            units += r.quantity;
        }
    }
    assert_eq!(units, STOCK, "exactly the stock is reserved");
    assert!(held.values().all(|&n| n <= u64::from(LIMIT)), "{held:?}");
    let (mut existing, mut limited, mut sold_out) = (0, 0, 0);
    for (user, out) in &results {
        match out {
            PurchaseOutcome::Reserved(_) => {}
            PurchaseOutcome::Existing(r) => {
                existing += 1;
                assert_eq!(owner.get(&r.id), Some(user), "a retry finds its own: {r:?}");
                assert_eq!((r.quantity, r.state), (1, Reserved));
            }
            PurchaseOutcome::LimitReached { held: h } => {
                limited += 1;
                assert_eq!(*h, u64::from(LIMIT));
                assert_eq!(held.get(user), Some(&u64::from(LIMIT)));
            }
            PurchaseOutcome::SoldOut { reserved } => {
                sold_out += 1;
                assert_eq!(*reserved, STOCK);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        owner.len() + existing + limited + sold_out,
        2_000,
        "every attempt answered once"
    );
    check(&*s, &sale, counters(0, STOCK, 0, STOCK)).await;
    assert_eq!(s.order_events(&sale).await.unwrap(), STOCK);
}

async fn concurrent_coupon_claims_issue_each_serial_once(s: Arc<dyn SaleStore>) {
    const LIMIT: u64 = 1_000;
    let c = campaign_id();
    let t = t0();
    let tasks: Vec<_> = (0..3_000u64)
        .map(|i| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                let user = format!("u{}", i % 2_500);
                let out = s.claim_coupon(&c, &user, "", LIMIT, t + i).await.unwrap();
                (user, out)
            })
        })
        .collect();
    let results: Vec<(String, CouponOutcome)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut serial_of: HashMap<String, u64> = HashMap::new();
    let mut serials = HashSet::new();
    for (user, out) in &results {
        if let CouponOutcome::New(n) = out {
            assert!((1..=LIMIT).contains(n), "serial {n}");
            assert!(serials.insert(*n), "serial {n} issued twice");
            assert!(
                serial_of.insert(user.clone(), *n).is_none(),
                "{user} got two coupons"
            );
        }
    }
    assert_eq!(serials.len() as u64, LIMIT);
    for (user, out) in &results {
        match out {
            CouponOutcome::New(_) => {}
            CouponOutcome::Existing(n) => assert_eq!(serial_of.get(user), Some(n)),
            CouponOutcome::Exhausted => assert!(!serial_of.contains_key(user)),
        }
    }
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), LIMIT);
    // Afterwards: holders get their serial again, everyone else nothing.
    for (user, n) in serial_of.iter().take(20) {
        assert_eq!(
            s.claim_coupon(&c, user, "", LIMIT, t).await.unwrap(),
            CouponOutcome::Existing(*n)
        );
    }
    assert_eq!(
        s.claim_coupon(&c, "late", "", LIMIT, t).await.unwrap(),
        CouponOutcome::Exhausted
    );
    assert_eq!(s.coupon_log_len(&c).await.unwrap(), LIMIT);
}
