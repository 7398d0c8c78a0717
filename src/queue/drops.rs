//! Scheduled drops: the verifiable pre-queue shuffle and the opening step every node's pacer
//! runs (the timeline itself is [`super::schedule`]).
//!
//! The shuffle is a pure function of the seed and the ticket ids: each id's key is
//! `SHA-256(seed_bytes || id_bytes)` and the pre-queue is ordered by key, lowest first (ties,
//! which need a SHA-256 collision, by id). The room commits the seed when the pre-queue opens
//! (publishing `SHA-256(seed_bytes)` in its status) and publishes the seed itself at opening, so
//! anyone holding the ids can recompute the order (`rushgate drop verify`).

use sha2::{Digest, Sha256};

use super::room::Room;
use super::schedule::Schedule;
use crate::config::RoomMode;
use crate::store::{PrequeueState, Store, StoreError};

/// Pre-queue members given their seqs per store call at opening.
const ASSIGN_BATCH: usize = 5_000;

/// The shuffle key of ticket id `id` under `seed`: `SHA-256(seed || id)`.
pub fn order_key(seed: &[u8], id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// The pre-queue order: `ids` sorted by [`order_key`] (lowest first), ties by id. A pure function
/// of the seed and the set of ids (the input order does not matter).
pub fn shuffle(seed: &[u8], mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by_cached_key(|id| (order_key(seed, id), id.clone()));
    ids
}

/// A fresh 32-byte seed from the OS-seeded CSPRNG, as hex.
pub fn new_seed() -> String {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
    hex(&seed)
}

/// The published commitment: `SHA-256(seed bytes)` as hex; `None` for a seed that is not hex.
pub fn seed_commitment(seed_hex: &str) -> Option<String> {
    decode_hex(seed_hex).map(|seed| hex(&Sha256::digest(seed)))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Decodes hex (either case); `None` for odd lengths or other characters.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    s.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The pacer's drop step at `now_ms`: commits the seed once the pre-queue window is open, and
/// from the opening on runs (or finishes) the opening until every pre-queue member has a seq.
/// A no-op for rooms without a pre-queue and once the opening is done.
pub async fn advance(room: &Room, store: &dyn Store, now_ms: u64) -> Result<(), StoreError> {
    let schedule = Schedule::of(&room.config);
    let (Some(pre_opens), Some(opens)) = (schedule.prequeue_opens_at, schedule.opens_at) else {
        return Ok(());
    };
    if now_ms < pre_opens || schedule.mode == RoomMode::Closed {
        return Ok(());
    }
    let (has_seed, opened) = {
        let snap = room.snapshot();
        (snap.state.seed.is_some(), snap.state.prequeue.opened())
    };
    if now_ms < opens {
        if !has_seed {
            store.commit_seed(&room.id, &new_seed()).await?;
        }
        return Ok(());
    }
    if !opened {
        open_prequeue(room, store, now_ms).await?;
    }
    Ok(())
}

/// Opens the pre-queue: commits the seed (or reads the committed one), freezes the pre-queue,
/// reads its members, shuffles them and assigns their seqs in batches. Safe to run on every
/// node at once: each batch applies once, and a node that finds a batch done jumps to where the
/// assignment stands.
pub async fn open_prequeue(
    room: &Room,
    store: &dyn Store,
    now_ms: u64,
) -> Result<PrequeueState, StoreError> {
    let seed_hex = store.commit_seed(&room.id, &new_seed()).await?;
    let seed = decode_hex(&seed_hex)
        .ok_or_else(|| StoreError::Protocol("committed seed is not hex".into()))?;
    let mut state = store.freeze_prequeue(&room.id).await?;
    if state.assigned >= state.count {
        return Ok(state);
    }
    let members = store.prequeue_members(&room.id).await?;
    if members.len() as u64 != state.count {
        return Err(StoreError::Protocol(format!(
            "pre-queue holds {} members, {} when it froze",
            members.len(),
            state.count
        )));
    }
    let order = shuffle(&seed, members);
    let mut at = state.assigned;
    while at < state.count {
        let from = usize::try_from(at).unwrap_or(usize::MAX).min(order.len());
        let to = from.saturating_add(ASSIGN_BATCH).min(order.len());
        let next = store
            .assign_prequeue(&room.id, &room.params, at, &order[from..to], now_ms)
            .await?;
        if next <= at {
            return Err(StoreError::Protocol(
                "pre-queue assignment did not advance".into(),
            ));
        }
        at = next;
    }
    state.assigned = at;
    state.waiting = 0;
    Ok(state)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(decode_hex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert!(decode_hex("abc").is_none());
        assert!(decode_hex("zz").is_none());
    }

    #[test]
    fn commitment_is_sha256_of_the_seed_bytes() {
        // SHA-256 of the empty input and of one zero byte (well-known values).
        assert_eq!(
            seed_commitment("").unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            seed_commitment("00").unwrap(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn shuffle_ignores_input_order_and_depends_on_the_seed() {
        let ids: Vec<String> = (0..50).map(|i| format!("a{i:015}")).collect();
        let mut reversed = ids.clone();
        reversed.reverse();
        let a = shuffle(&[1; 32], ids.clone());
        assert_eq!(a, shuffle(&[1; 32], reversed));
        assert_ne!(a, shuffle(&[2; 32], ids.clone()));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
    }
}
