//! The only code that talks to storage: the [`Store`] trait speaks the domain (join, tick,
//! claim, leave, mark_alive), with a Redis implementation (one Lua script per multi-key
//! operation) and an embedded in-process twin with the same semantics.
//!
//! Redis keys: the one table is [`keys`].

pub mod keys;
mod memory;
mod redis;
pub mod sale;

use async_trait::async_trait;
use bytes::Bytes;

pub use memory::MemoryStore;
pub use redis::{RedisStore, TlsFiles};
pub use sale::SaleStore;

use crate::id::RoomId;

/// How long a revocation is kept by default: a day, the longest a ticket lives.
pub const REVOCATION_KEEP_MS: u64 = 24 * 3600 * 1000;

/// Most revocation feed entries one [`Store::revocations`] call returns.
pub const REVOCATIONS_PAGE: u64 = 512;

/// Most head entries one tick examines (admits or evicts), bounding a tick's run time in Redis:
/// an idle head costs about a dozen commands inside the script, and 20,000 of them (~250 ms)
/// starved joins for seconds while a million idle waiters were evicted; 5,000 keeps a tick
/// near 60 ms and still skips 20,000 idle heads a second per node.
pub const MAX_HEAD_CHECKS: u64 = 5_000;

/// How long a group hold outlasts the session it stands for, so it never lapses first. A
/// same-room hold with more than this left still stands for a running session (its end is
/// kept); one with less stands for a session already over (a new session replaces it).
pub const GROUP_HOLD_MARGIN_MS: u64 = 5_000;

/// Why a store operation failed. Expected outcomes (closed room, absent identity) are values.
#[derive(Debug, thiserror::Error, Clone)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code does not understand (a bug or a foreign key).
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

/// The pacing and liveness parameters of one room, passed to every room operation so that all
/// nodes apply the same rules to the shared state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomParams {
    /// Admissions per minute across all nodes.
    pub admit_per_minute: u32,
    /// Admitted sessions alive at once.
    pub max_active: u32,
    /// Most tokens the bucket holds (admissions allowed in one burst).
    pub burst: u32,
    /// A waiter not seen for this long is evicted when it reaches the head.
    pub idle_ms: u64,
    /// Granularity of liveness records; eviction happens at most this much after `idle_ms`.
    pub interval_ms: u64,
    /// Session (pass) length, counted from the first claim.
    pub session_ms: u64,
    /// Rooms with a sale: most admitted sessions that have not reserved stock yet (available
    /// units times `admit_per_unit`), so nobody is admitted to find nothing. `None`: no sale.
    pub admit_cap: Option<u64>,
    /// Scheduled drop with a pre-queue: its opening time (ms). Before it, new arrivals join the
    /// pre-queue (no seq); from it on, the pre-queue is frozen, shuffled and given seqs ahead of
    /// every later arrival. `None`: no pre-queue.
    pub prequeue_until_ms: Option<u64>,
    /// Admit a new arrival at once when nobody waits and a slot and a token are free (mode
    /// `safety_net`); false: every arrival queues (mode `queue`).
    pub instant: bool,
    /// Admit nobody (mode `closed`): ticks refresh the state but pop no waiter.
    pub hold: bool,
}

impl RoomParams {
    /// The token bucket's size for a rate: a second's worth of admissions, at least one. The
    /// one Rust statement of the rule (the Lua prelude's `rg_settings` is its Redis twin).
    pub fn burst_for(admit_per_minute: u32) -> u32 {
        (admit_per_minute / 60).max(1)
    }

    /// Index of the liveness interval that contains `now_ms`.
    pub fn interval_of(&self, now_ms: u64) -> u64 {
        now_ms / self.interval_ms
    }

    /// When the liveness bitmap of `interval` may be dropped: no eviction check reads it after.
    pub fn alive_expire_at(&self, interval: u64) -> u64 {
        (interval + 2) * self.interval_ms + self.idle_ms
    }
}

/// Room lifecycle as stored in `meta.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomStatus {
    /// Joining and admitting.
    #[default]
    Open,
    /// Joining, not admitting.
    Paused,
    /// Neither joining nor admitting.
    Closed,
    /// No new joins; everyone waiting is admitted at once (no pacing, no session cap).
    Draining,
}

impl RoomStatus {
    /// Every status, in a fixed order.
    pub const ALL: [RoomStatus; 4] = [
        RoomStatus::Open,
        RoomStatus::Paused,
        RoomStatus::Closed,
        RoomStatus::Draining,
    ];

    /// The stored / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Open => "open",
            RoomStatus::Paused => "paused",
            RoomStatus::Closed => "closed",
            RoomStatus::Draining => "draining",
        }
    }

    /// Parses a stored name; unknown names read as open so a newer writer cannot wedge a room.
    pub fn from_stored(s: &str) -> RoomStatus {
        match s {
            "paused" => RoomStatus::Paused,
            "closed" => RoomStatus::Closed,
            "draining" => RoomStatus::Draining,
            _ => RoomStatus::Open,
        }
    }
}

/// A scheduled drop's pre-queue as stored (`meta` fields `pre_frozen`, `pre_base`, `pre_count`,
/// `pre_assigned`, and the size of `rg:{room}:pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrequeueState {
    /// Arrivals in the pre-queue still without a seq (0 once the opening is complete).
    pub waiting: u64,
    /// The opening has begun: the pre-queue takes no new arrivals and seqs
    /// `base + 1 ..= base + count` are reserved for it, in shuffled order.
    pub frozen: bool,
    /// Seqs handed out before the opening.
    pub base: u64,
    /// Arrivals in the pre-queue when it froze.
    pub count: u64,
    /// How many of them (in shuffled order) have their seq so far.
    pub assigned: u64,
}

impl PrequeueState {
    /// Every pre-queue arrival has its seq (or there was no pre-queue to open).
    pub fn opened(&self) -> bool {
        self.frozen && self.assigned >= self.count
    }
}

/// Where an identity stands, read without making a place ([`Store::lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Waiting with this seq (marked seen).
    Waiting {
        /// Its sequence number.
        seq: u64,
    },
    /// Holds a live admission.
    Admitted,
    /// In the pre-queue, not yet given a seq.
    Prequeue,
    /// Holds nothing.
    Absent,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The identity now waits with sequence number `seq`; `created` tells whether this call made
    /// the place (false: the identity already had it and keeps it).
    Waiting {
        /// Sequence number: global FIFO order of the room.
        seq: u64,
        /// Whether this call created the place.
        created: bool,
    },
    /// The identity holds an admission (now, because nobody waited, or from earlier).
    Admitted {
        /// Sequence number when known (0 for an admission made earlier).
        seq: u64,
        /// Whether this call created the admission.
        created: bool,
    },
    /// The identity is in the pre-queue of a scheduled drop: it gets its seq at opening.
    Prequeue {
        /// Whether this call added it.
        created: bool,
    },
    /// The room is closed: no place was made.
    Closed,
}

/// What a join did, and the place's holder generation (0 for a place never moved or ended;
/// a new ticket must carry it, or the nodes count it as revoked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// What the join did.
    pub outcome: JoinOutcome,
    /// The identity's holder generation.
    pub gen: u32,
}

/// What leaving did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveOutcome {
    /// A waiting place was given up.
    LeftQueue,
    /// An admitted session was ended and its slot freed.
    EndedSession,
    /// The identity held nothing.
    Absent,
    /// The ticket asking is of an older holder generation (the place moved to another device
    /// or its session ended): nothing changed.
    Moved,
}

/// What a claim of an admitted session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The session, expiring at this ms.
    Session(u64),
    /// No live admission.
    Absent,
    /// The ticket asking is of an older holder generation: it may not take the session.
    Moved,
}

/// Why a holder generation was raised, as the revocation feed records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The place moved to another device (transfer claimed).
    Transferred,
    /// The session ended (leave with an admitted ticket, admin end, the shop's end header).
    Ended,
}

impl RevokeReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Transferred => "transferred",
            RevokeReason::Ended => "ended",
        }
    }
}

/// One entry of a room's revocation feed: tickets and passes of `identity` with a holder
/// generation below `gen` no longer work. Nodes keep it until `until_ms` (when every ticket
/// and pass it could refuse has expired anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The place's identity.
    pub identity: String,
    /// The generation now in force.
    pub gen: u32,
    /// Why.
    pub reason: RevokeReason,
    /// When the entry may be forgotten (ms).
    pub until_ms: u64,
}

impl Revocation {
    /// The stored form, `identity gen reason until_ms` (identities never hold a space).
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {}",
            self.identity,
            self.gen,
            self.reason.as_str(),
            self.until_ms
        )
    }

    /// Parses the stored form.
    pub fn decode(s: &str) -> Option<Revocation> {
        let mut it = s.split(' ');
        let identity = it.next()?.to_string();
        let gen = it.next()?.parse().ok()?;
        let reason = match it.next()? {
            "transferred" => RevokeReason::Transferred,
            "ended" => RevokeReason::Ended,
            _ => return None,
        };
        let until_ms = it.next()?.parse().ok()?;
        Some(Revocation {
            identity,
            gen,
            reason,
            until_ms,
        })
    }
}

/// Who ends a place ([`Store::end`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// Its holder, with a ticket of this generation: refused when the place moved on; only an
    /// admitted session's end revokes (a waiting place's tickets die with the place).
    Holder(u32),
    /// The operator or the shop: always applies, and always revokes the identity's passes
    /// (also those made without the store: pass-through and fail-open).
    Operator,
}

/// What offering a place for transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOffer {
    /// The code now names the place until it expires or is claimed.
    Offered,
    /// The ticket is of an older holder generation.
    Moved,
    /// The identity holds no place.
    Absent,
    /// The code is in use (a new random code may be tried).
    Taken,
}

/// A node's lease on a room's session slots ([`Store::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// Slots granted to this node.
    pub slots: u64,
    /// Nodes holding a lease now, this one included when granted.
    pub holders: u64,
    /// Slots leased to all nodes together.
    pub leased: u64,
}

/// A transfer claimed: the place's new holder generation and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// The place's identity.
    pub identity: String,
    /// The new holder generation (the claiming device's).
    pub gen: u32,
    /// The place's seq (0: admitted earlier, or in a pre-queue).
    pub seq: u64,
    /// Whether the place is an admitted session.
    pub admitted: bool,
    /// The shop's user id the offering ticket carried (`""` for none).
    pub uid: String,
}

/// What claiming a transfer code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferClaim {
    /// The place moved to the claimer.
    Moved(Transferred),
    /// No such code (never made, expired, or already used).
    Unknown,
    /// The place changed holder or ended since the code was made.
    Stale,
}

/// The departure bitmap from `base_byte` on: bit `seq` is set when waiter `seq` left or was
/// evicted. Byte `i` of `bytes` covers seqs `(base_byte + i) * 8 ..`, most significant bit first
/// (the Redis bitmap layout).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoneBits {
    /// First byte of the bitmap that `bytes` holds.
    pub base_byte: u64,
    /// The bitmap bytes.
    pub bytes: Bytes,
}

/// A room's shared state after a tick: what every node caches to answer polls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomState {
    /// Serving watermark: every seq ≤ `served` was admitted or departed.
    pub served: u64,
    /// Highest sequence number handed out.
    pub last_seq: u64,
    /// Waiters in the queue (including idle ones not yet evicted).
    pub waiting: u64,
    /// Live admitted sessions (claimed or within their claim window).
    pub active: u64,
    /// Admissions ever made.
    pub admitted_total: u64,
    /// Idle waiters evicted at the head, ever.
    pub evicted_total: u64,
    /// Places and sessions given up, ever.
    pub left_total: u64,
    /// Lifecycle state.
    pub status: RoomStatus,
    /// Entries ever appended to the room's revocation feed: a node that has applied fewer
    /// reads the rest with [`Store::revocations`].
    pub revoked_total: u64,
    /// Departure bits past the watermark; `None` when departures did not change since the
    /// count the caller passed in (its copy is still right).
    pub gone: Option<GoneBits>,
    /// Admissions per minute in force (the node's setting or a live one from the admin API).
    pub admit_per_minute: u32,
    /// Session cap in force (likewise).
    pub max_active: u32,
    /// The committed shuffle seed of a scheduled drop (hex), once a node committed one. Secret
    /// until the opening: nodes publish only its SHA-256 before.
    pub seed: Option<String>,
    /// The pre-queue of a scheduled drop.
    pub prequeue: PrequeueState,
    /// Version of the room's live message ([`Store::set_message`]); 0 when none was ever set.
    /// A node whose copy is of another version reads it with [`Store::message`].
    pub message_version: u64,
}

impl RoomState {
    /// Departures ever (the change detector for the gone bitmap).
    pub fn departed(&self) -> u64 {
        self.evicted_total + self.left_total
    }
}

/// The answer of [`Store::group_hold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupHold {
    /// The hold is the shopper's: a session of the room may be claimed.
    Granted,
    /// The shopper holds the group's most sessions already, in these rooms.
    Held(Vec<String>),
}

/// Storage of rooms. Every method is atomic with respect to every other call on any node, and
/// takes the current time as an argument so both implementations run the same logic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Gives `identity` a place (or its existing place or admission). Marks it seen. When nobody
    /// waits, a slot is free and the bucket has a token, admits it at once. Never creates a
    /// second place for one identity. Keys: meta, seq, q, active, sess, alive.
    /// `minted`: the caller has just made `identity` at random (an anonymous shopper's), so it
    /// cannot hold a place yet and the store may skip looking it up; the outcome is the same.
    async fn join_as(
        &self,
        room: &RoomId,
        identity: &str,
        minted: bool,
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<Joined, StoreError>;

    /// [`Store::join_as`] without the holder generation.
    async fn join(
        &self,
        room: &RoomId,
        identity: &str,
        minted: bool,
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<JoinOutcome, StoreError> {
        Ok(self
            .join_as(room, identity, minted, params, now_ms)
            .await?
            .outcome)
    }

    /// One pacer step: expires sessions, refills the shared token bucket and admits head waiters
    /// in seq order (evicting idle ones) while tokens and slots allow, then returns the state.
    /// `known_departed`: departures the caller's gone bitmap reflects (`None`: send it anyway).
    async fn tick(
        &self,
        room: &RoomId,
        params: &RoomParams,
        now_ms: u64,
        known_departed: Option<u64>,
    ) -> Result<RoomState, StoreError>;

    /// Records that waiters `seqs` were seen during liveness interval `interval`.
    async fn mark_alive(
        &self,
        room: &RoomId,
        params: &RoomParams,
        interval: u64,
        seqs: &[u64],
    ) -> Result<(), StoreError>;

    /// Starts (first call) or reads the session of an admitted identity for a ticket of holder
    /// generation `held` (`None`: any). Keys: active, sess, holder.
    async fn claim_as(
        &self,
        room: &RoomId,
        identity: &str,
        held: Option<u32>,
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<Claimed, StoreError>;

    /// Starts (first call) or reads the session of an admitted identity: returns its expiry in
    /// ms, or `None` when the identity holds no live admission.
    async fn claim(
        &self,
        room: &RoomId,
        identity: &str,
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        match self.claim_as(room, identity, None, params, now_ms).await? {
            Claimed::Session(expiry) => Ok(Some(expiry)),
            Claimed::Absent | Claimed::Moved => Ok(None),
        }
    }

    /// Records that the admitted `identities` reserved stock, so they no longer count against
    /// [`RoomParams::admit_cap`]. Returns how many hold an admission (the others change nothing).
    async fn mark_buyers(&self, room: &RoomId, identities: &[String]) -> Result<u64, StoreError>;

    /// [`Store::mark_buyers`] for one identity: false when it holds no admission.
    async fn mark_buying(&self, room: &RoomId, identity: &str) -> Result<bool, StoreError> {
        Ok(self.mark_buyers(room, &[identity.to_string()]).await? == 1)
    }

    /// Gives up a waiting place or ends an admitted session, for `by`. Ending a session (and
    /// any operator end) raises the identity's holder generation and appends a
    /// [`Revocation`] (kept until `until_ms`) to the room's feed, so every node refuses the
    /// session's passes after its next refresh. Keys: meta, q, active, sess, gone, buying,
    /// pre, pre_left, holder, revoked.
    async fn end(
        &self,
        room: &RoomId,
        identity: &str,
        by: EndedBy,
        until_ms: u64,
    ) -> Result<LeaveOutcome, StoreError>;

    /// Gives up a waiting place or ends an admitted session (as its holder at any generation).
    async fn leave(&self, room: &RoomId, identity: &str) -> Result<LeaveOutcome, StoreError> {
        let until = crate::clock::now_ms() + REVOCATION_KEEP_MS;
        self.end(room, identity, EndedBy::Holder(u32::MAX), until)
            .await
    }

    /// Names `identity`'s place (held at generation `gen`) by the one-time `code` for `ttl_ms`,
    /// remembering the shop user id `uid` for the new holder. Keys: holder, q, active, pre,
    /// xfer:<code>.
    #[allow(clippy::too_many_arguments)]
    async fn offer_transfer(
        &self,
        room: &RoomId,
        identity: &str,
        gen: u32,
        uid: &str,
        code: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<TransferOffer, StoreError>;

    /// Claims transfer `code` (once, on any node): raises the place's holder generation and
    /// appends a [`Revocation`] kept until `until_ms`. `claim` names this claim (made by the
    /// caller before the call, no spaces): for 5 minutes after a move, the same `claim`
    /// gets the same `Moved` again (nothing changes), any other `Unknown`. Keys: xfer:<code>,
    /// holder, revoked, meta, q, active, pre.
    async fn claim_transfer(
        &self,
        room: &RoomId,
        code: &str,
        claim: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<TransferClaim, StoreError>;

    /// Revocation feed entries from index `from` on (at most 512), and the index after the
    /// last one returned. Entries trimmed away (expired) are skipped. Keys: meta, revoked.
    async fn revocations(
        &self,
        room: &RoomId,
        from: u64,
    ) -> Result<(Vec<Revocation>, u64), StoreError>;

    /// Sets the room's lifecycle state (pause, resume, close, open, drain).
    async fn set_status(&self, room: &RoomId, status: RoomStatus) -> Result<(), StoreError>;

    /// Sets live settings that override every node's configured ones from its next tick on
    /// (`None` leaves a setting as it is).
    async fn set_settings(
        &self,
        room: &RoomId,
        admit_per_minute: Option<u32>,
        max_active: Option<u32>,
    ) -> Result<(), StoreError>;

    /// Sets the room's live message for every node (`message`: the operator's JSON, opaque to
    /// the store) and returns its version, one more than the last (1 for the first). The
    /// message and its version change together. Keys: meta.
    async fn set_message(&self, room: &RoomId, message: &str) -> Result<u64, StoreError>;

    /// The room's live message and its version; `(0, None)` when none was ever set. Keys: meta.
    async fn message(&self, room: &RoomId) -> Result<(u64, Option<String>), StoreError>;

    /// Takes `identity`'s session hold in `room` of group `group` until `until_ms`, unless the identity already holds `most` live holds in other
    /// rooms of the group: then nothing changes and the answer names those rooms. Atomic
    /// across every node: of two rooms racing for a shopper's last hold, one wins. Holds past
    /// their end (at `now_ms`) do not count. A live hold in the same room with more than
    /// [`GROUP_HOLD_MARGIN_MS`] left stands for the session still running (a pass picked up
    /// again): its end is kept, neither lengthened nor shortened, so picking up a pass again
    /// never holds the other rooms longer than the session. A hold within the margin (its
    /// session over) is replaced. Keys: the group's holds (its own slot).
    async fn group_hold(
        &self,
        group: &str,
        identity: &str,
        room: &RoomId,
        until_ms: u64,
        most: u32,
        now_ms: u64,
    ) -> Result<GroupHold, StoreError>;

    /// Drops `identity`'s hold in `room` of `group` (its session ended); true when a live hold
    /// was dropped.
    async fn group_release(
        &self,
        group: &str,
        identity: &str,
        room: &RoomId,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Keeps the claim window of `identity`'s admission open until at least `deadline_ms`
    /// (its pass not picked up yet: held back by its group's cap), so the admission and its
    /// slot are not lost while it waits. False when there is no live unclaimed admission (gone,
    /// or already a session). Keys: active, sess.
    async fn keep_claim(
        &self,
        room: &RoomId,
        identity: &str,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Reads where `identity` stands without making a place: waiting (marked seen at `now_ms`),
    /// admitted, in the pre-queue, or absent. A pre-queue ticket's first poll after the opening
    /// learns its seq here. Keys: meta, q, active, pre, alive.
    async fn lookup(
        &self,
        room: &RoomId,
        identity: &str,
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<Lookup, StoreError>;

    /// Commits the shuffle seed of a scheduled drop (`HSETNX meta seed`): the first call on any
    /// node wins, and every call returns the committed seed, so all nodes agree on it.
    async fn commit_seed(&self, room: &RoomId, seed_hex: &str) -> Result<String, StoreError>;

    /// Freezes the pre-queue (first call only): no new arrivals join it, and seqs
    /// `base + 1 ..= base + count` are reserved for its `count` members, so every later
    /// arrival queues behind them. Returns the pre-queue state. Keys: meta, seq, pre.
    async fn freeze_prequeue(&self, room: &RoomId) -> Result<PrequeueState, StoreError>;

    /// Every identity of the pre-queue (any order). Stable once frozen.
    async fn prequeue_members(&self, room: &RoomId) -> Result<Vec<String>, StoreError>;

    /// Gives pre-queue members `ids` (positions `start ..` of the shuffled order) seqs
    /// `base + start + 1 ..`, queued and marked seen at `now_ms` (members that left meanwhile get
    /// their gone bit instead). Idempotent across racing nodes: applies only when `start` is
    /// where the assignment stands, and returns where it stands after. An id outside the
    /// pre-queue is a protocol error (the caller's list is wrong); nothing changes then.
    /// Keys: meta, q, pre, pre_left, gone, alive.
    async fn assign_prequeue(
        &self,
        room: &RoomId,
        params: &RoomParams,
        start: u64,
        ids: &[String],
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Claims `key` for `ttl_ms` (`SET NX PX`): true for exactly one caller across all nodes
    /// until it expires. Webhook events use it so each is delivered once per cluster.
    async fn claim_once(&self, key: &str, ttl_ms: u64, now_ms: u64) -> Result<bool, StoreError>;

    /// Leases `node` up to `want` of the room's session slots for `ttl_ms` (see `lease.lua`):
    /// held back from every other admission until the lease expires, is renewed with a
    /// smaller grant, or is given back by [`Store::reconcile`]. Renewing replaces the node's
    /// lease. Keys: meta, leases, active, buying.
    async fn lease(
        &self,
        room: &RoomId,
        node: &str,
        want: u64,
        params: &RoomParams,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Lease, StoreError>;

    /// Records the sessions `node` admitted on its lease while the store was unreachable
    /// (identity, session expiry ms): each leaves the queue and counts as an admitted session
    /// and against the token bucket; then the node's lease is given back. Returns how many
    /// were recorded (an identity already holding a live session is not counted twice).
    /// Keys: meta, q, active, sess, leases.
    async fn reconcile(
        &self,
        room: &RoomId,
        node: &str,
        admitted: &[(String, u64)],
        params: &RoomParams,
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the last store command succeeded (readiness).
    fn healthy(&self) -> bool;

    /// Why the store could not be reached the last time a connection failed (a refused TLS
    /// certificate, a refused password, nobody answering), while it is still failing.
    fn connection_error(&self) -> Option<String> {
        None
    }
}
