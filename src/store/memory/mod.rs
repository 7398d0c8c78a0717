//! Embedded in-process store: the same operations and semantics as the Lua scripts in
//! `store/lua/`, for a single node with no Redis. Each operation runs under one mutex, which
//! gives it the same all-or-nothing atomicity a Lua script has in Redis.

mod sale;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Claimed, EndedBy, GoneBits, GroupHold, JoinOutcome, Joined, Lease, LeaveOutcome, Lookup,
    PrequeueState, Revocation, RevokeReason, RoomParams, RoomState, RoomStatus, Store, StoreError,
    TransferClaim, TransferOffer, Transferred, GROUP_HOLD_MARGIN_MS, MAX_HEAD_CHECKS,
    REVOCATIONS_PAGE,
};
use crate::id::RoomId;

/// How long a moved transfer code answers its claim id again (`claim_transfer.lua`: 5 min).
const CLAIM_REPLAY_MS: u64 = 300_000;

/// The embedded store. Cheap to share behind an `Arc`; state lives until the process exits.
#[derive(Default)]
pub struct MemoryStore {
    rooms: Mutex<HashMap<RoomId, RoomData>>,
    /// Sales and coupons (see `sale.rs`).
    sales: Mutex<sale::SaleBook>,
    /// `claim_once` keys → expiry ms, and when expired ones were last dropped.
    once: Mutex<(HashMap<String, u64>, u64)>,
    /// Group holds (`rg:{group:<id>}:holds`): group → identity → (room, until ms).
    groups: Mutex<HashMap<String, GroupHolds>>,
}

/// One group's holds (the twin of `rg:{group:<id>}:holds`): identity → (room, until ms).
type GroupHolds = HashMap<String, Vec<(String, u64)>>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_room<T>(&self, room: &RoomId, f: impl FnOnce(&mut RoomData) -> T) -> T {
        // A panic while holding the lock cannot leave half-applied state behind (each operation
        // validates before mutating), so a poisoned lock is safe to keep using.
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        f(rooms.entry(room.clone()).or_default())
    }
}

/// One room: the in-memory twin of the room's Redis keys.
#[derive(Default)]
struct RoomData {
    seq: u64,
    served: u64,
    admitted: u64,
    evicted: u64,
    left: u64,
    /// `None` until the first save: a fresh bucket starts full.
    bucket: Option<(f64, u64)>,
    status: Option<RoomStatus>,
    /// seq → identity (the ZSET ordered by score) and identity → seq (its member index).
    queue: BTreeMap<u64, String>,
    queued: HashMap<String, u64>,
    /// identity → expiry ms (claim deadline, or session expiry once claimed).
    active: HashMap<String, u64>,
    sessions: HashMap<String, u64>,
    /// Live settings from the admin API (`meta.set_rate`, `meta.set_max_active`).
    set_rate: Option<u32>,
    set_max_active: Option<u32>,
    /// The operator's live message (`meta.msg`) and its version (`meta.msg_v`).
    message: Option<String>,
    message_version: u64,
    /// Admitted identities holding a reservation (`rg:{room}:buying`).
    buying: HashSet<String>,
    gone: Bitmap,
    /// interval → (expire-at ms, bitmap).
    alive: HashMap<u64, (u64, Bitmap)>,
    /// A scheduled drop's pre-queue (`rg:{room}:pre`), kept after the opening as the record.
    pre: HashSet<String>,
    /// Pre-queue members that left during the opening (`rg:{room}:pre_left`).
    pre_left: HashSet<String>,
    /// `meta.pre_*` once the pre-queue froze: (base, count, assigned).
    pre_frozen: Option<(u64, u64, u64)>,
    /// `meta.seed`
    seed: Option<String>,
    /// `rg:{room}:holder`: identity → holder generation (absent: 0).
    holder: HashMap<String, u32>,
    /// `rg:{room}:revoked` and `meta.rev_total` / `meta.rev_trimmed`.
    revoked: VecDeque<Revocation>,
    rev_total: u64,
    rev_trimmed: u64,
    /// `rg:{room}:xfer:<code>` → (expiry ms, generation, identity, uid) while offered.
    transfers: HashMap<String, (u64, u32, String, String)>,
    /// `rg:{room}:xfer:<code>` after its move: (expiry ms, claim id, the move).
    claimed: HashMap<String, (u64, String, Transferred)>,
    /// `rg:{room}:leases`: node → (slots, expiry ms).
    leases: HashMap<String, (u64, u64)>,
    /// `meta.leased` and `meta.leased_until`.
    leased: u64,
    leased_until: u64,
}

/// A growable bitmap with Redis's layout (bit 0 = most significant bit of byte 0).
#[derive(Default, Clone)]
struct Bitmap(Vec<u8>);

impl Bitmap {
    fn set(&mut self, bit: u64) {
        let byte = (bit / 8) as usize;
        if self.0.len() <= byte {
            self.0.resize(byte + 1, 0);
        }
        self.0[byte] |= 0x80 >> (bit % 8);
    }

    fn get(&self, bit: u64) -> bool {
        self.0
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0)
    }

    /// GETRANGE semantics: inclusive byte range, clipped to the bitmap.
    fn range(&self, start: u64, end: u64) -> Bytes {
        let len = self.0.len() as u64;
        if start >= len || start > end {
            return Bytes::new();
        }
        let end = end.min(len - 1);
        Bytes::copy_from_slice(&self.0[start as usize..=end as usize])
    }
}

impl RoomData {
    fn status(&self) -> RoomStatus {
        self.status.unwrap_or(RoomStatus::Open)
    }

    fn gen(&self, identity: &str) -> u32 {
        self.holder.get(identity).copied().unwrap_or(0)
    }

    /// Raises `identity`'s holder generation and appends the feed entry.
    fn revoke(&mut self, identity: &str, reason: RevokeReason, until_ms: u64) -> u32 {
        let gen = self.gen(identity) + 1;
        self.holder.insert(identity.to_string(), gen);
        self.revoked.push_back(Revocation {
            identity: identity.to_string(),
            gen,
            reason,
            until_ms,
        });
        self.rev_total += 1;
        gen
    }

    /// Whether `identity` holds a live admission at `now` (`ZSCORE active` past `now`).
    fn admitted_at(&self, identity: &str, now: u64) -> bool {
        self.active.get(identity).is_some_and(|&exp| exp > now)
    }

    /// rg_expire_sessions
    fn expire_sessions(&mut self, now: u64) {
        let (sessions, buying) = (&mut self.sessions, &mut self.buying);
        self.active.retain(|id, exp| {
            let keep = *exp > now;
            if !keep {
                sessions.remove(id);
                buying.remove(id);
            }
            keep
        });
    }

    /// rg_settings: the node's parameters with live settings applied.
    fn settings(&self, p: &RoomParams) -> RoomParams {
        let mut p = *p;
        if let Some(rate) = self.set_rate {
            p.admit_per_minute = rate;
            p.burst = RoomParams::burst_for(rate);
        }
        if let Some(max) = self.set_max_active {
            p.max_active = max;
        }
        p
    }

    /// rg_free_slots
    fn free_slots(&self, p: &RoomParams, now: u64) -> i64 {
        let mut n = self.active.len() as i64;
        if self.leased_until > now {
            n += self.leased as i64;
        }
        let free = i64::from(p.max_active) - n;
        match p.admit_cap {
            Some(cap) => free.min(cap as i64 - (n - self.buying.len() as i64)),
            None => free,
        }
    }

    /// rg_refill: (tokens, timestamp to save)
    fn refill(&self, now: u64, p: &RoomParams) -> (f64, u64) {
        let burst = f64::from(p.burst);
        let (tokens, ts) = self.bucket.unwrap_or((burst, now));
        let tokens = if now > ts {
            burst.min(tokens + (now - ts) as f64 * f64::from(p.admit_per_minute) / 60000.0)
        } else {
            tokens
        };
        (tokens, ts.max(now))
    }

    /// rg_mark_alive
    fn mark_alive(&mut self, seq: u64, interval: u64, p: &RoomParams) {
        let entry = self
            .alive
            .entry(interval)
            .or_insert_with(|| (0, Bitmap::default()));
        entry.0 = p.alive_expire_at(interval);
        entry.1.set(seq);
    }

    /// rg_last_seen
    fn last_seen(&self, seq: u64, cur: u64, span: u64, now: u64) -> Option<u64> {
        (cur.saturating_sub(span)..=cur).rev().find(|k| {
            self.alive
                .get(k)
                .is_some_and(|(expire_at, bits)| *expire_at > now && bits.get(seq))
        })
    }

    /// rg_save_tokens: the script stores `tostring(tokens)`, which Lua formats with 14
    /// significant digits (`%.14g`); keep the same rounded value so both stores pace alike
    /// (e.g. ten refills of 0.3 make 3 tokens, not 2.9999999999999996).
    fn save_tokens(&mut self, tokens: f64, ts: u64) {
        let stored = format!("{tokens:.13e}").parse().unwrap_or(tokens);
        self.bucket = Some((stored, ts));
    }

    /// rg_freeze_pre
    fn freeze_pre(&mut self) {
        if self.pre_frozen.is_none() {
            let n = self.pre.len() as u64;
            self.pre_frozen = Some((self.seq, n, 0));
            self.seq += n;
        }
    }

    /// rg_pre_pending
    fn pre_pending(&self) -> bool {
        self.pre_frozen
            .is_some_and(|(_, count, assigned)| assigned < count)
    }

    /// Whether `identity` is in the pre-queue without a seq yet (not frozen, or pending).
    fn in_open_prequeue(&self, identity: &str) -> bool {
        (self.pre_frozen.is_none() || self.pre_pending()) && self.pre.contains(identity)
    }

    fn prequeue_state(&self) -> PrequeueState {
        match self.pre_frozen {
            None => PrequeueState {
                waiting: self.pre.len() as u64,
                ..PrequeueState::default()
            },
            Some((base, count, assigned)) => PrequeueState {
                waiting: count - assigned,
                frozen: true,
                base,
                count,
                assigned,
            },
        }
    }

    fn drop_expired_alive(&mut self, now: u64) {
        self.alive.retain(|_, (expire_at, _)| *expire_at > now);
    }
    /// join.lua for one identity (the holder generation is the caller's).
    fn join(&mut self, identity: &str, p: &RoomParams, now: u64) -> JoinOutcome {
        let r = self;
        let p = &r.settings(p);
        let cur = p.interval_of(now);
        let status = r.status();
        if status == RoomStatus::Closed {
            return JoinOutcome::Closed;
        }
        if let Some(&seq) = r.queued.get(identity) {
            r.mark_alive(seq, cur, p);
            return JoinOutcome::Waiting {
                seq,
                created: false,
            };
        }
        r.expire_sessions(now);
        if r.active.contains_key(identity) {
            return JoinOutcome::Admitted {
                seq: 0,
                created: false,
            };
        }
        let mut pending = false;
        if let Some(opens) = p.prequeue_until_ms {
            pending = r.pre_pending();
            if r.in_open_prequeue(identity) {
                return JoinOutcome::Prequeue { created: false };
            }
            if r.pre_frozen.is_none() {
                if now < opens {
                    if status == RoomStatus::Draining {
                        return JoinOutcome::Closed;
                    }
                    r.pre.insert(identity.to_string());
                    return JoinOutcome::Prequeue { created: true };
                }
                r.freeze_pre();
                pending = r.pre_pending();
            }
        }
        if status == RoomStatus::Draining {
            return JoinOutcome::Closed;
        }
        r.seq += 1;
        let seq = r.seq;
        if p.instant
            && !pending
            && status == RoomStatus::Open
            && r.queue.is_empty()
            && r.free_slots(p, now) > 0
        {
            let (tokens, ts) = r.refill(now, p);
            if tokens >= 1.0 {
                r.save_tokens(tokens - 1.0, ts);
                r.active.insert(identity.to_string(), now + p.idle_ms);
                r.served = seq;
                r.admitted += 1;
                return JoinOutcome::Admitted { seq, created: true };
            }
        }
        r.queue.insert(seq, identity.to_string());
        r.queued.insert(identity.to_string(), seq);
        r.mark_alive(seq, cur, p);
        JoinOutcome::Waiting { seq, created: true }
    }

    /// tick.lua, with the revocation feed trimmed like the script trims it.
    fn tick(&mut self, p: &RoomParams, now: u64, known_departed: Option<u64>) -> RoomState {
        let r = self;
        let p = &r.settings(p);
        let cur = p.interval_of(now);
        let span = p.idle_ms.div_ceil(p.interval_ms);
        r.expire_sessions(now);
        r.drop_expired_alive(now);
        let status = r.status();
        if matches!(status, RoomStatus::Open | RoomStatus::Draining) && !p.hold && !r.pre_pending()
        {
            let (tokens, ts) = r.refill(now, p);
            let (budget, slots) = if status == RoomStatus::Draining {
                let unbounded = RoomParams {
                    max_active: u32::MAX,
                    ..*p
                };
                (MAX_HEAD_CHECKS as i64, r.free_slots(&unbounded, now))
            } else {
                (tokens.floor() as i64, r.free_slots(p, now))
            };
            let mut want = budget.min(slots);
            let (mut checks, mut admitted, mut evicted, mut served) =
                (MAX_HEAD_CHECKS, 0u32, 0u64, None);
            while want > 0 && checks > 0 {
                let Some((&seq, _)) = r.queue.first_key_value() else {
                    break;
                };
                let Some(member) = r.queue.remove(&seq) else {
                    break;
                };
                r.queued.remove(&member);
                served = Some(seq);
                checks -= 1;
                match r.last_seen(seq, cur, span, now) {
                    Some(k) => {
                        let deadline =
                            ((k + 1) * p.interval_ms + p.idle_ms).max(now + p.interval_ms);
                        r.active.insert(member, deadline);
                        admitted += 1;
                        want -= 1;
                    }
                    None => {
                        r.gone.set(seq);
                        evicted += 1;
                    }
                }
            }
            r.save_tokens((tokens - f64::from(admitted)).max(tokens.min(0.0)), ts);
            if let Some(seq) = served {
                r.served = seq;
                r.admitted += u64::from(admitted);
                r.evicted += evicted;
            }
        }
        let mut trims = 0;
        while trims < 100 && r.revoked.front().is_some_and(|e| e.until_ms <= now) {
            r.revoked.pop_front();
            trims += 1;
        }
        r.rev_trimmed += trims;
        let departed = r.evicted + r.left;
        let gone = (known_departed != Some(departed)).then(|| {
            let base_byte = (r.served + 1) / 8;
            let bytes = if r.seq > r.served {
                r.gone.range(base_byte, r.seq / 8)
            } else {
                Bytes::new()
            };
            GoneBits { base_byte, bytes }
        });
        RoomState {
            served: r.served,
            last_seq: r.seq,
            waiting: r.queue.len() as u64,
            active: r.active.len() as u64,
            admitted_total: r.admitted,
            evicted_total: r.evicted,
            left_total: r.left,
            status: r.status(),
            gone,
            admit_per_minute: p.admit_per_minute,
            max_active: p.max_active,
            seed: r.seed.clone(),
            prequeue: r.prequeue_state(),
            revoked_total: r.rev_total,
            message_version: r.message_version,
        }
    }

    /// leave.lua's giving up, without the holder check and the revocation.
    fn give_up(&mut self, identity: &str) -> LeaveOutcome {
        let r = self;
        if let Some(seq) = r.queued.remove(identity) {
            r.queue.remove(&seq);
            r.gone.set(seq);
            r.left += 1;
            return LeaveOutcome::LeftQueue;
        }
        if r.active.remove(identity).is_some() {
            r.sessions.remove(identity);
            r.buying.remove(identity);
            r.left += 1;
            return LeaveOutcome::EndedSession;
        }
        if r.pre_frozen.is_none() {
            if r.pre.remove(identity) {
                r.left += 1;
                return LeaveOutcome::LeftQueue;
            }
        } else if r.pre_pending() && r.pre.contains(identity) {
            r.pre_left.insert(identity.to_string());
            return LeaveOutcome::LeftQueue;
        }
        LeaveOutcome::Absent
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn join_as(
        &self,
        room: &RoomId,
        identity: &str,
        minted: bool,
        p: &RoomParams,
        now: u64,
    ) -> Result<Joined, StoreError> {
        Ok(self.with_room(room, |r| {
            let outcome = r.join(identity, p, now);
            let gen = if minted { 0 } else { r.gen(identity) };
            Joined { outcome, gen }
        }))
    }

    async fn tick(
        &self,
        room: &RoomId,
        p: &RoomParams,
        now: u64,
        known_departed: Option<u64>,
    ) -> Result<RoomState, StoreError> {
        Ok(self.with_room(room, |r| r.tick(p, now, known_departed)))
    }

    async fn mark_alive(
        &self,
        room: &RoomId,
        p: &RoomParams,
        interval: u64,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        self.with_room(room, |r| {
            for &seq in seqs {
                r.mark_alive(seq, interval, p);
            }
        });
        Ok(())
    }

    async fn claim_as(
        &self,
        room: &RoomId,
        identity: &str,
        held: Option<u32>,
        p: &RoomParams,
        now: u64,
    ) -> Result<Claimed, StoreError> {
        Ok(self.with_room(room, |r| {
            if held.is_some_and(|g| g < r.gen(identity)) {
                return Claimed::Moved;
            }
            let Some(&exp) = r.active.get(identity) else {
                return Claimed::Absent;
            };
            if exp <= now {
                return Claimed::Absent;
            }
            if let Some(&claimed) = r.sessions.get(identity) {
                return Claimed::Session(claimed);
            }
            let expiry = now + p.session_ms;
            r.active.insert(identity.to_string(), expiry);
            r.sessions.insert(identity.to_string(), expiry);
            Claimed::Session(expiry)
        }))
    }

    async fn end(
        &self,
        room: &RoomId,
        identity: &str,
        by: EndedBy,
        until_ms: u64,
    ) -> Result<LeaveOutcome, StoreError> {
        Ok(self.with_room(room, |r| {
            if let EndedBy::Holder(gen) = by {
                if gen < r.gen(identity) {
                    return LeaveOutcome::Moved;
                }
            }
            let outcome = r.give_up(identity);
            if outcome == LeaveOutcome::EndedSession || by == EndedBy::Operator {
                r.revoke(identity, RevokeReason::Ended, until_ms);
            }
            outcome
        }))
    }

    async fn offer_transfer(
        &self,
        room: &RoomId,
        identity: &str,
        gen: u32,
        uid: &str,
        code: &str,
        ttl_ms: u64,
        now: u64,
    ) -> Result<TransferOffer, StoreError> {
        Ok(self.with_room(room, |r| {
            if gen < r.gen(identity) {
                return TransferOffer::Moved;
            }
            if !r.queued.contains_key(identity)
                && !r.admitted_at(identity, now)
                && !r.pre.contains(identity)
            {
                return TransferOffer::Absent;
            }
            r.transfers.retain(|_, (exp, ..)| *exp > now);
            r.claimed.retain(|_, (exp, ..)| *exp > now);
            if r.transfers.contains_key(code) || r.claimed.contains_key(code) {
                return TransferOffer::Taken;
            }
            r.transfers.insert(
                code.to_string(),
                (now + ttl_ms, gen, identity.to_string(), uid.to_string()),
            );
            TransferOffer::Offered
        }))
    }

    async fn claim_transfer(
        &self,
        room: &RoomId,
        code: &str,
        claim: &str,
        now: u64,
        until_ms: u64,
    ) -> Result<TransferClaim, StoreError> {
        Ok(self.with_room(room, |r| {
            if let Some((exp, by, moved)) = r.claimed.get(code) {
                return if *exp > now && by == claim {
                    TransferClaim::Moved(moved.clone())
                } else {
                    TransferClaim::Unknown
                };
            }
            let Some((exp, gen, identity, uid)) = r.transfers.remove(code) else {
                return TransferClaim::Unknown;
            };
            if exp <= now {
                return TransferClaim::Unknown;
            }
            if gen != r.gen(&identity) {
                return TransferClaim::Stale;
            }
            let seq = r.queued.get(&identity).copied();
            let admitted = seq.is_none() && r.admitted_at(&identity, now);
            if seq.is_none() && !admitted && !r.pre.contains(&identity) {
                return TransferClaim::Stale;
            }
            let gen = r.revoke(&identity, RevokeReason::Transferred, until_ms);
            let moved = Transferred {
                identity,
                gen,
                seq: seq.unwrap_or(0),
                admitted,
                uid,
            };
            r.claimed.insert(
                code.to_string(),
                (now + CLAIM_REPLAY_MS, claim.to_string(), moved.clone()),
            );
            TransferClaim::Moved(moved)
        }))
    }

    async fn revocations(
        &self,
        room: &RoomId,
        from: u64,
    ) -> Result<(Vec<Revocation>, u64), StoreError> {
        Ok(self.with_room(room, |r| {
            let from = from.max(r.rev_trimmed);
            let entries: Vec<Revocation> = r
                .revoked
                .iter()
                .skip((from - r.rev_trimmed) as usize)
                .take(REVOCATIONS_PAGE as usize)
                .cloned()
                .collect();
            let next = from + entries.len() as u64;
            (entries, next)
        }))
    }

    async fn mark_buyers(&self, room: &RoomId, identities: &[String]) -> Result<u64, StoreError> {
        Ok(self.with_room(room, |r| {
            let mut n = 0;
            for id in identities {
                if r.active.contains_key(id) {
                    r.buying.insert(id.clone());
                    n += 1;
                }
            }
            n
        }))
    }

    async fn set_status(&self, room: &RoomId, status: RoomStatus) -> Result<(), StoreError> {
        self.with_room(room, |r| r.status = Some(status));
        Ok(())
    }

    async fn set_settings(
        &self,
        room: &RoomId,
        admit_per_minute: Option<u32>,
        max_active: Option<u32>,
    ) -> Result<(), StoreError> {
        self.with_room(room, |r| {
            r.set_rate = admit_per_minute.or(r.set_rate);
            r.set_max_active = max_active.or(r.set_max_active);
        });
        Ok(())
    }

    async fn set_message(&self, room: &RoomId, message: &str) -> Result<u64, StoreError> {
        Ok(self.with_room(room, |r| {
            r.message_version += 1;
            r.message = Some(message.to_string());
            r.message_version
        }))
    }

    async fn group_hold(
        &self,
        group: &str,
        identity: &str,
        room: &RoomId,
        until_ms: u64,
        most: u32,
        now_ms: u64,
    ) -> Result<GroupHold, StoreError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let holds = groups
            .entry(group.to_string())
            .or_default()
            .entry(identity.to_string())
            .or_default();
        holds.retain(|(_, until)| *until > now_ms);
        // A same-room hold with more than the margin left stands for the running session.
        let mine = holds
            .iter()
            .find(|(r, u)| r == room.as_str() && u - now_ms > GROUP_HOLD_MARGIN_MS)
            .map_or(until_ms, |(_, u)| *u);
        let others: Vec<String> = holds
            .iter()
            .filter(|(r, _)| r != room.as_str())
            .map(|(r, _)| r.clone())
            .collect();
        if others.len() >= most as usize {
            return Ok(GroupHold::Held(others));
        }
        holds.retain(|(r, _)| r != room.as_str());
        holds.push((room.as_str().to_string(), mine));
        Ok(GroupHold::Granted)
    }

    async fn group_release(
        &self,
        group: &str,
        identity: &str,
        room: &RoomId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let Some(holds) = groups.get_mut(group).and_then(|g| g.get_mut(identity)) else {
            return Ok(false);
        };
        holds.retain(|(_, until)| *until > now_ms);
        let before = holds.len();
        holds.retain(|(r, _)| r != room.as_str());
        Ok(holds.len() < before)
    }

    async fn keep_claim(
        &self,
        room: &RoomId,
        identity: &str,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Ok(self.with_room(room, |r| {
            if r.sessions.contains_key(identity) {
                return false;
            }
            match r.active.get_mut(identity) {
                Some(score) if *score > now_ms => {
                    *score = (*score).max(deadline_ms);
                    true
                }
                _ => false,
            }
        }))
    }

    async fn message(&self, room: &RoomId) -> Result<(u64, Option<String>), StoreError> {
        Ok(self.with_room(room, |r| (r.message_version, r.message.clone())))
    }

    async fn lookup(
        &self,
        room: &RoomId,
        identity: &str,
        p: &RoomParams,
        now: u64,
    ) -> Result<Lookup, StoreError> {
        Ok(self.with_room(room, |r| {
            if let Some(&seq) = r.queued.get(identity) {
                r.mark_alive(seq, p.interval_of(now), p);
                return Lookup::Waiting { seq };
            }
            if r.active.get(identity).is_some_and(|&exp| exp > now) {
                return Lookup::Admitted;
            }
            if r.in_open_prequeue(identity) {
                return Lookup::Prequeue;
            }
            Lookup::Absent
        }))
    }

    async fn commit_seed(&self, room: &RoomId, seed_hex: &str) -> Result<String, StoreError> {
        Ok(self.with_room(room, |r| {
            r.seed.get_or_insert_with(|| seed_hex.to_string()).clone()
        }))
    }

    async fn freeze_prequeue(&self, room: &RoomId) -> Result<PrequeueState, StoreError> {
        Ok(self.with_room(room, |r| {
            r.freeze_pre();
            r.prequeue_state()
        }))
    }

    async fn prequeue_members(&self, room: &RoomId) -> Result<Vec<String>, StoreError> {
        Ok(self.with_room(room, |r| {
            let mut members: Vec<String> = r.pre.iter().cloned().collect();
            members.sort_unstable();
            members
        }))
    }

    async fn assign_prequeue(
        &self,
        room: &RoomId,
        p: &RoomParams,
        start: u64,
        ids: &[String],
        now: u64,
    ) -> Result<u64, StoreError> {
        self.with_room(room, |r| {
            let Some((base, count, assigned)) = r.pre_frozen else {
                return Err(StoreError::Protocol("pre-queue is not frozen".into()));
            };
            if start != assigned {
                return Ok(assigned);
            }
            if start + ids.len() as u64 > count {
                return Err(StoreError::Protocol("batch runs past the pre-queue".into()));
            }
            if let Some(id) = ids.iter().find(|id| !r.pre.contains(*id)) {
                return Err(StoreError::Protocol(format!("not in the pre-queue: {id}")));
            }
            let cur = p.interval_of(now);
            for (i, id) in ids.iter().enumerate() {
                let seq = base + start + i as u64 + 1;
                if r.pre_left.contains(id) {
                    r.gone.set(seq);
                    r.left += 1;
                } else {
                    r.queue.insert(seq, id.clone());
                    r.queued.insert(id.clone(), seq);
                    r.mark_alive(seq, cur, p);
                }
            }
            let assigned = start + ids.len() as u64;
            r.pre_frozen = Some((base, count, assigned));
            if assigned >= count {
                r.pre_left.clear();
            }
            Ok(assigned)
        })
    }

    async fn claim_once(&self, key: &str, ttl_ms: u64, now: u64) -> Result<bool, StoreError> {
        let mut guard = self.once.lock().unwrap_or_else(|p| p.into_inner());
        let (once, swept) = &mut *guard;
        // Expired claims are dropped once a second, not on every call: every join of a room
        // with proof of work claims a key, and a sweep per call made each claim O(live claims).
        if now >= *swept + 1000 {
            once.retain(|_, expiry| *expiry > now);
            *swept = now;
        }
        if once.get(key).is_some_and(|&expiry| expiry > now) {
            return Ok(false);
        }
        once.insert(key.to_string(), now + ttl_ms);
        Ok(true)
    }

    async fn lease(
        &self,
        room: &RoomId,
        node: &str,
        want: u64,
        p: &RoomParams,
        ttl_ms: u64,
        now: u64,
    ) -> Result<Lease, StoreError> {
        Ok(self.with_room(room, |r| {
            let p = r.settings(p);
            r.leases.retain(|_, (_, exp)| *exp > now);
            let (mut others, mut holders, mut until) = (0u64, 1u64, now + ttl_ms);
            let mine = r.leases.get(node).map_or(0, |(slots, _)| *slots);
            for (id, (slots, exp)) in &r.leases {
                if id != node {
                    others += slots;
                    holders += 1;
                    until = until.max(*exp);
                }
            }
            let n = r.active.len() as i64;
            let mut free = i64::from(p.max_active) - n - others as i64;
            if let Some(cap) = p.admit_cap {
                free = free.min(cap as i64 - (n - r.buying.len() as i64) - others as i64);
            }
            let free = free.max(0) as u64;
            let unheld = free.saturating_sub(mine);
            let grant = want
                .min(mine + unheld / (holders + 1))
                .min(u64::from(p.max_active) / (4 * holders))
                .min(free);
            if grant > 0 {
                r.leases.insert(node.to_string(), (grant, now + ttl_ms));
            } else {
                r.leases.remove(node);
                holders -= 1;
            }
            r.leased = others + grant;
            r.leased_until = until;
            Lease {
                slots: grant,
                holders,
                leased: others + grant,
            }
        }))
    }

    async fn reconcile(
        &self,
        room: &RoomId,
        node: &str,
        admitted: &[(String, u64)],
        p: &RoomParams,
        now: u64,
    ) -> Result<u64, StoreError> {
        Ok(self.with_room(room, |r| {
            let p = r.settings(p);
            let mut recorded = 0u64;
            for (id, exp) in admitted {
                if let Some(seq) = r.queued.remove(id) {
                    r.queue.remove(&seq);
                }
                if *exp <= now {
                    continue;
                }
                if r.admitted_at(id, now) {
                    if let Some(held) = r.active.get_mut(id) {
                        *held = (*held).max(*exp);
                    }
                    r.sessions.entry(id.clone()).or_insert(*exp);
                } else {
                    r.active.insert(id.clone(), *exp);
                    r.sessions.insert(id.clone(), *exp);
                    recorded += 1;
                }
            }
            if recorded > 0 {
                r.admitted += recorded;
                let (tokens, ts) = r.refill(now, &p);
                r.save_tokens(tokens - recorded as f64, ts);
            }
            if let Some((slots, _)) = r.leases.remove(node) {
                r.leased = r.leased.saturating_sub(slots);
            }
            recorded
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        true
    }
}
