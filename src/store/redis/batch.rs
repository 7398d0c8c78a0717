//! Coalescing of concurrent store calls. While earlier calls of one operation on one room (or
//! sale) are in flight, the calls that arrive wait in a queue and go to Redis together as one
//! script run, so a crowd costs one round trip and one script invocation per batch instead of
//! one per shopper. Under light load every batch holds one call and nothing waits.
//!
//! Guarantees: calls are handed to the store in the order they were queued, each call gets its
//! own answer, and a batch that fails fails each of its calls with that error. A call whose
//! caller went away still runs (as a sent command would).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use dashmap::DashMap;

use crate::id::RoomId;
use crate::store::sale::{PurchaseOutcome, SaleParams};
use crate::store::{Joined, RoomParams, StoreError};

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// Hands queued calls of type `Q` to a batch runner and routes its answers `R` back.
pub(crate) struct Batcher<Q, R> {
    calls: mpsc::UnboundedSender<(Q, Reply<R>)>,
}

impl<Q: Send + 'static, R: Send + 'static> Batcher<Q, R> {
    /// Starts the dispatcher task. `run` gets at most `max_batch` calls in queue order and must
    /// answer each of them in the same order; at most `in_flight` batches run at once.
    pub(super) fn spawn<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>> + Send + 'static,
    {
        let (calls, mut queue) = mpsc::unbounded_channel::<(Q, Reply<R>)>();
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let run = Arc::new(run);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // Waiting for a free slot before draining the queue is what forms batches:
                // calls arriving meanwhile ride along with this one.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (args, replies): (Vec<Q>, Vec<Reply<R>>) = batch.into_iter().unzip();
                    let n = args.len();
                    let answers = match run(args).await {
                        Ok(answers) if answers.len() == n => answers,
                        Ok(answers) => {
                            let e = StoreError::Protocol(format!(
                                "batch of {n} calls got {} answers",
                                answers.len()
                            ));
                            (0..n).map(|_| Err(e.clone())).collect()
                        }
                        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
                    };
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                    drop(slot);
                });
            }
        });
        Self { calls }
    }

    /// Queues one call and waits for its answer.
    pub(super) async fn call(&self, args: Q) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send((args, reply))
            .map_err(|_| StoreError::Unavailable("store dispatcher stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store batch was dropped".into()))?
    }
}

/// One dispatcher per room for joins and per sale for purchases, made on first use (rooms and
/// sales come from the config, so the maps stay small).
#[derive(Default)]
pub(super) struct Batchers {
    pub(super) joins: DashMap<RoomId, Arc<Batcher<JoinCall, Joined>>>,
    pub(super) purchases: DashMap<String, Arc<Batcher<PurchaseCall, PurchaseOutcome>>>,
}

/// A join waiting for its batch.
pub(super) struct JoinCall {
    pub(super) identity: String,
    pub(super) minted: bool,
    pub(super) params: RoomParams,
    pub(super) now: u64,
}

/// A purchase waiting for its batch.
pub(super) struct PurchaseCall {
    pub(super) user: String,
    pub(super) quantity: u64,
    /// The buyer sent an idempotency key (`id` is then [`crate::store::sale::keyed_reservation_id`]).
    pub(super) keyed: bool,
    pub(super) id: String,
    /// The shop's user id (`""` for none).
    pub(super) user_id: String,
    pub(super) params: SaleParams,
    pub(super) now: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let seen = batches.clone();
        let batcher = Arc::new(Batcher::spawn(16, 1, move |args: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(args.into_iter().map(|a| Ok(a * 2)).collect())
            }
        }));
        let calls: Vec<_> = (0..200u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, answer) = c.await.unwrap();
            assert_eq!(answer.unwrap(), i * 2);
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(n < 200, "{n} batches for 200 concurrent calls");
        assert!(n >= 200 / 16, "a batch held more than 16 calls");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_call() {
        let batcher = Batcher::spawn(8, 2, |_args: Vec<u32>| async {
            Err::<Vec<Result<u32, StoreError>>, _>(StoreError::Unavailable("down".into()))
        });
        assert!(matches!(
            batcher.call(1).await,
            Err(StoreError::Unavailable(m)) if m == "down"
        ));
        let short: Batcher<u32, u32> =
            Batcher::spawn(8, 2, |_args: Vec<u32>| async { Ok(Vec::new()) });
        assert!(matches!(short.call(1).await, Err(StoreError::Protocol(_))));
    }
}
