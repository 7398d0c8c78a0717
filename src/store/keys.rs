//! The one table of Redis keys. Every key of a room, sale or campaign carries its id as a hash
//! tag, `rg:{id}:name`, so all keys of one room (or sale) live in one Redis Cluster slot and each
//! Lua script stays single-slot. Scripts receive the prefix `rg:{id}:` or the full keys from
//! here; their headers name the keys and point to this table instead of restating it.
//!
//! Room, `rg:{room}:...`:
//! - `seq` counter: FIFO sequence numbers for every node.
//! - `q` ZSET identity → seq: the waiters. The member is the identity (shop user key hashed with
//!   the ticket secret, or a random ticket id), so one identity has at most one place.
//! - `active` ZSET identity → expiry ms: admitted sessions (claim deadline until the pass is
//!   picked up, then session expiry); `sess` HASH identity → session expiry of claimed ones.
//! - `meta` HASH: `served` watermark, `admitted`/`evicted`/`left` totals, token bucket
//!   (`tokens`, `ts`), `state` (open / paused / closed / draining), live settings from the admin
//!   API (`set_rate`, `set_max_active`) that every node's next tick applies; a drop's `seed`
//!   (committed with HSETNX, first node wins) and `pre_frozen` / `pre_base` / `pre_count` /
//!   `pre_assigned`; the operator's live message (`msg`, JSON) and its version `msg_v`, set
//!   together by `set_message.lua` and reported by every tick (the message itself is read only
//!   when the version moved).
//! - `buying` SET: admitted identities that reserved stock (rooms with a sale); the stock-aware
//!   admission cap counts admitted sessions not in it.
//! - `pre` SET: a scheduled drop's pre-queue (identities without a seq). At opening it freezes,
//!   seqs `base+1…base+count` are reserved, and `open_prequeue.lua` queues members in the order
//!   `SHA-256(seed ‖ id)` in batches (applied only at `start == pre_assigned`, so racing nodes
//!   cannot double-assign). Kept 7 days as the record the shuffle can be verified against.
//! - `pre_left` SET: pre-queue members that left while the opening was assigning places.
//! - `holder` HASH identity → holder generation, for places moved to another device or whose
//!   session ended (absent: 0). A ticket or pass of a lower generation no longer works.
//! - `revoked` LIST, the revocation feed: `identity gen reason until_ms` per raised
//!   generation, appended as `meta.rev_total` counts up; the tick trims entries past `until_ms`
//!   from the head (`meta.rev_trimmed` counts them), so a node reads what it has not applied
//!   by index.
//! - `xfer:<code>` STRING `gen identity expires_ms uid`: a one-time transfer code (expiring on
//!   its own too).
//! - `leases` HASH node id → `slots expires_ms`: session slots leased to nodes for a store
//!   outage (`on_store_error = "capped"`); their sum is `meta.leased`, valid until
//!   `meta.leased_until`, and no admission takes those slots meanwhile.
//! - `gone` BITMAP by seq: left or evicted waiters.
//! - `alive:<interval>` BITMAP by seq, one per liveness interval (idle timeout / 10), expiring on
//!   its own: a waiter is alive when its bit is set in any interval of the last idle timeout.
//! - `pow:<challenge id>` string: a solved proof-of-work challenge, claimed once with
//!   `claim_once` (SET NX PX, kept until the challenge has expired), so one solution makes one
//!   place on any node ([`pow_claim_key`]).
//!
//! Sale, `rg:{sale}:...`:
//! - `stock` HASH available / reserved / confirmed / total, and `restocks` (units added while
//!   sold out, ever).
//! - `buyers` HASH user → units held.
//! - `rsv` HASH reservation id → `state|user|qty|expires_ms`. A purchase with an idempotency key
//!   is named `{sale}.` + 32 hex digits of SHA-256(sale, user, key)
//!   ([`keyed_reservation_id`](super::sale::keyed_reservation_id)), so a retry finds it here.
//! - `rsv_exp` ZSET of expiry entries, one per purchase batch (its reservation ids, space
//!   separated, scored by their common expiry); settling leaves the id there and the sweep passes
//!   over reservations no longer `reserved`.
//! - `orders` STREAM of every transition.
//!
//! Coupon campaign, `rg:{campaign}:...`: `issued` counter (INCR), `claimed` HASH user → serial,
//! `log` STREAM.
//!
//! Webhooks: `rg:{hooks}:<event id>`, the claim that one node delivers an event.

use crate::id::RoomId;

/// Key names of one room.
pub struct RoomKeys {
    /// `rg:{room}:`, the prefix every key of the room starts with.
    pub prefix: String,
}

impl RoomKeys {
    /// The keys of `room`.
    pub fn new(room: &RoomId) -> Self {
        Self {
            prefix: format!("rg:{{{}}}:", room.as_str()),
        }
    }

    /// The key `name` of the room (`rg:{room}:name`).
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key of transfer code `code` (`rg:{room}:xfer:<code>`).
    pub fn transfer(&self, code: &str) -> String {
        format!("{}xfer:{code}", self.prefix)
    }
}

/// The key `name` of sale or coupon campaign `id` (`rg:{id}:name`).
pub fn sale_key(id: &str, name: &str) -> String {
    format!("rg:{{{id}}}:{name}")
}

/// The session holds of group `group` (`rg:{group:<id>}:holds`, a HASH identity →
/// `room until_ms;room until_ms…`): which rooms' sessions each shopper holds, and until when.
/// Its own slot: a group spans rooms in other slots, and is consulted (in one script) before
/// a session of any of them is claimed. The hash expires with its last hold.
pub fn group_key(group: &str) -> String {
    format!("rg:{{group:{group}}}:holds")
}

/// The claim key of webhook event `event_id`: one node delivers each event.
pub fn webhook_claim_key(event_id: &str) -> String {
    format!("rg:{{hooks}}:{event_id}")
}

/// The claim key of the proof-of-work challenge `challenge_id` of `room` (`rg:{room}:pow:<id>`):
/// the first join that presents its solution claims it, on any node; every later one is a
/// replay. `challenge_id` is the challenge's random id (base64url, never contains `{` or `}`).
pub fn pow_claim_key(room: &RoomId, challenge_id: &str) -> String {
    RoomKeys::new(room).key(&format!("pow:{challenge_id}"))
}
