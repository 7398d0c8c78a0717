//! The one table of Redis keys. Every key of a room, sale or campaign carries its id as a
//! hash tag, `rg:{id}:name`, so all keys of one room (or sale) live in one Redis Cluster slot and
//! each Lua script stays single-slot. The Lua scripts receive the prefix `rg:{id}:` (or the
//! full keys) from here; their headers point to this table instead of restating it.
//!
//! Room (`rg:{room}:...`):
//! - `meta` HASH: served, admitted, evicted, left, tokens, ts, state (lifecycle), live settings
//! - `seq` counter: sequence numbers, FIFO across nodes
//! - `q` ZSET identity → seq (one place per identity)
//! - `active` ZSET identity → expiry ms (admitted sessions, counted against `max_active`)
//! - `sess` HASH identity → session expiry ms
//! - `gone` BITMAP by seq: left or evicted
//! - `alive:<interval>` BITMAP by seq: seen during that liveness interval
//! - `buying` SET: admitted identities that have reserved stock (rooms with a sale)
//! - `pre` SET: identities in a scheduled drop's pre-queue (kept 7 days after opening as the
//!   record the shuffle can be verified against)
//! - `pre_left` SET: pre-queue identities that left while the opening was assigning places
//!
//! Sale (`rg:{sale}:...`): `stock` HASH (available, reserved, confirmed, total, ...), `buyers`
//! HASH user → units held, `rsv` HASH reservation id → reservation, `rsv_exp` ZSET of purchase
//! batches by expiry, `orders` STREAM. Coupon campaign (`rg:{campaign}:...`): `issued` counter,
//! `claimed` HASH user → serial, `log` STREAM. Webhooks: `rg:{hooks}:<event id>`, the claim
//! that one node delivers an event.

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
}

/// The key `name` of sale or coupon campaign `id` (`rg:{id}:name`).
pub fn sale_key(id: &str, name: &str) -> String {
    format!("rg:{{{id}}}:{name}")
}

/// The claim key of webhook event `event_id`: one node delivers each event.
pub fn webhook_claim_key(event_id: &str) -> String {
    format!("rg:{{hooks}}:{event_id}")
}
