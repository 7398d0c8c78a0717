//! The room side of the Redis store: [`Store`] on Redis. Every multi-key operation is one
//! Lua script from `lua/` (keys: [`crate::store::keys`]), run with EVALSHA and reloaded on
//! NOSCRIPT; joins of one room are coalesced into one script run per batch.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::batch::{Batcher, JoinCall};
use super::reply::{array, bad, int, text};
use super::RedisStore;
use crate::id::RoomId;
use crate::store::keys::{group_key, RoomKeys};
use crate::store::{
    Claimed, EndedBy, GoneBits, GroupHold, JoinOutcome, Joined, Lease, LeaveOutcome, Lookup,
    PrequeueState, Revocation, RoomParams, RoomState, RoomStatus, Store, StoreError, TransferClaim,
    TransferOffer, Transferred, GROUP_HOLD_MARGIN_MS, MAX_HEAD_CHECKS, REVOCATIONS_PAGE,
};

/// Members per page when reading a pre-queue, and per batch when assigning its seqs.
const PREQUEUE_PAGE: usize = 5_000;

/// The room scripts share a prelude, prepended at build time so each stays one EVALSHA.
macro_rules! room_script {
    ($file:literal) => {
        concat!(
            include_str!("lua/room_prelude.lua"),
            "\n",
            include_str!(concat!("lua/", $file))
        )
    };
}

struct Scripts {
    join: Script,
    tick: Script,
    leave: Script,
    claim: Script,
    mark_alive: Script,
    mark_buying: Script,
    lookup: Script,
    commit_seed: Script,
    freeze_prequeue: Script,
    pre_scan: Script,
    open_prequeue: Script,
    offer_transfer: Script,
    claim_transfer: Script,
    revocations: Script,
    lease: Script,
    reconcile: Script,
    set_message: Script,
    group_hold: Script,
    group_release: Script,
    keep_claim: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    join: Script::from_lua(room_script!("join.lua")),
    tick: Script::from_lua(room_script!("tick.lua")),
    leave: Script::from_lua(include_str!("lua/leave.lua")),
    claim: Script::from_lua(include_str!("lua/claim.lua")),
    mark_alive: Script::from_lua(include_str!("lua/mark_alive.lua")),
    mark_buying: Script::from_lua(include_str!("lua/mark_buying.lua")),
    lookup: Script::from_lua(room_script!("lookup.lua")),
    commit_seed: Script::from_lua(include_str!("lua/commit_seed.lua")),
    freeze_prequeue: Script::from_lua(room_script!("freeze_prequeue.lua")),
    pre_scan: Script::from_lua(include_str!("lua/pre_scan.lua")),
    open_prequeue: Script::from_lua(room_script!("open_prequeue.lua")),
    offer_transfer: Script::from_lua(include_str!("lua/offer_transfer.lua")),
    claim_transfer: Script::from_lua(include_str!("lua/claim_transfer.lua")),
    revocations: Script::from_lua(include_str!("lua/revocations.lua")),
    lease: Script::from_lua(room_script!("lease.lua")),
    reconcile: Script::from_lua(room_script!("reconcile.lua")),
    set_message: Script::from_lua(include_str!("lua/set_message.lua")),
    group_hold: Script::from_lua(include_str!("lua/group_hold.lua")),
    group_release: Script::from_lua(include_str!("lua/group_release.lua")),
    keep_claim: Script::from_lua(include_str!("lua/keep_claim.lua")),
});

impl RedisStore {
    fn join_batcher(&self, room: &RoomId) -> Arc<Batcher<JoinCall, Joined>> {
        self.batcher(
            |b| &b.joins,
            room,
            |store, room, calls| async move { store.join_batch(&room, calls).await },
        )
    }

    /// One join.lua run for every call of the batch, with the newest call's parameters and
    /// time (they differ by the microseconds the batch took to form).
    async fn join_batch(
        &self,
        room: &RoomId,
        calls: Vec<JoinCall>,
    ) -> Result<Vec<Result<Joined, StoreError>>, StoreError> {
        let Some(p) = calls.last().map(|c| c.params) else {
            return Ok(Vec::new());
        };
        let now = calls.iter().map(|c| c.now).max().unwrap_or_default();
        let k = RoomKeys::new(room);
        let [per_min, max_active, burst, _, cap] = room_args(&p);
        let keys = vec![
            k.key("meta"),
            k.key("q"),
            k.key("active"),
            k.key("sess"),
            k.key("seq"),
            k.key("buying"),
            k.key("pre"),
            k.key("holder"),
        ];
        let mut args = Vec::with_capacity(10 + 2 * calls.len());
        args.extend([
            k.prefix.clone(),
            now.to_string(),
            p.interval_ms.to_string(),
            p.idle_ms.to_string(),
            per_min,
            max_active,
            burst,
            cap,
            p.prequeue_until_ms
                .map_or_else(|| "-1".to_string(), |t| t.to_string()),
            flag(p.instant),
        ]);
        let n = calls.len();
        for c in calls {
            args.extend([c.identity, flag(c.minted)]);
        }
        let reply = array(
            self.eval_acked(&SCRIPTS.join, keys, args).await?,
            4 * n,
            "join reply",
        )?;
        Ok(reply.chunks(4).map(join_outcome).collect())
    }
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// One {status, seq, created, gen} quadruple of a join.lua reply.
fn join_outcome(reply: &[Value]) -> Result<Joined, StoreError> {
    let [status, seq, created, gen] = reply else {
        return Err(bad("join reply"));
    };
    let seq = int(seq, "join seq")?;
    let created = int(created, "join created")? == 1;
    let outcome = match text(status, "join status")? {
        "waiting" => JoinOutcome::Waiting { seq, created },
        "admitted" => JoinOutcome::Admitted { seq, created },
        "prequeue" => JoinOutcome::Prequeue { created },
        "closed" => JoinOutcome::Closed,
        other => return Err(StoreError::Protocol(format!("join status {other}"))),
    };
    let gen = u32::try_from(int(gen, "join gen")?).map_err(|_| bad("join gen"))?;
    Ok(Joined { outcome, gen })
}

fn room_args(p: &RoomParams) -> [String; 5] {
    [
        p.admit_per_minute.to_string(),
        p.max_active.to_string(),
        p.burst.to_string(),
        MAX_HEAD_CHECKS.to_string(),
        p.admit_cap
            .map_or_else(|| "-1".to_string(), |c| c.to_string()),
    ]
}

#[async_trait]
impl Store for RedisStore {
    async fn join_as(
        &self,
        room: &RoomId,
        identity: &str,
        minted: bool,
        p: &RoomParams,
        now: u64,
    ) -> Result<Joined, StoreError> {
        self.join_batcher(room)
            .call(JoinCall {
                identity: identity.to_string(),
                minted,
                params: *p,
                now,
            })
            .await
    }

    async fn tick(
        &self,
        room: &RoomId,
        p: &RoomParams,
        now: u64,
        known_departed: Option<u64>,
    ) -> Result<RoomState, StoreError> {
        let k = RoomKeys::new(room);
        let [per_min, max_active, burst, checks, cap] = room_args(p);
        let keys = vec![
            k.key("meta"),
            k.key("q"),
            k.key("active"),
            k.key("sess"),
            k.key("gone"),
            k.key("seq"),
            k.key("buying"),
            k.key("pre"),
            k.key("revoked"),
        ];
        let known = known_departed.map_or_else(|| "-1".to_string(), |d| d.to_string());
        let args = vec![
            k.prefix.clone(),
            now.to_string(),
            p.interval_ms.to_string(),
            p.idle_ms.to_string(),
            per_min,
            max_active,
            burst,
            known,
            checks,
            cap,
            flag(p.hold),
        ];
        let r = array(
            self.eval(&SCRIPTS.tick, keys, args).await?,
            20,
            "tick reply",
        )?;
        let gone = match &r[9] {
            Value::Null => None,
            Value::Bytes(b) => Some(b.clone()),
            Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            _ => return Err(bad("gone bitmap")),
        }
        .map(|bytes| -> Result<GoneBits, StoreError> {
            Ok(GoneBits {
                base_byte: int(&r[8], "gone base")?,
                bytes,
            })
        })
        .transpose()?;
        Ok(RoomState {
            served: int(&r[0], "served")?,
            last_seq: int(&r[1], "last seq")?,
            waiting: int(&r[2], "waiting")?,
            active: int(&r[3], "active")?,
            admitted_total: int(&r[4], "admitted")?,
            evicted_total: int(&r[5], "evicted")?,
            left_total: int(&r[6], "left")?,
            status: RoomStatus::from_stored(text(&r[7], "state")?),
            gone,
            admit_per_minute: u32::try_from(int(&r[10], "admit per minute")?)
                .map_err(|_| bad("admit per minute"))?,
            max_active: u32::try_from(int(&r[11], "max active")?).map_err(|_| bad("max active"))?,
            seed: match &r[12] {
                Value::Null => None,
                v => Some(text(v, "seed")?.to_string()),
            },
            prequeue: PrequeueState {
                waiting: int(&r[13], "pre-queue waiting")?,
                frozen: int(&r[14], "pre-queue frozen")? == 1,
                base: int(&r[15], "pre-queue base")?,
                count: int(&r[16], "pre-queue count")?,
                assigned: int(&r[17], "pre-queue assigned")?,
            },
            revoked_total: int(&r[18], "revocations")?,
            message_version: int(&r[19], "message version")?,
        })
    }

    async fn mark_alive(
        &self,
        room: &RoomId,
        p: &RoomParams,
        interval: u64,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let k = RoomKeys::new(room);
        // Large batches go in chunks: Lua's argument list should stay modest.
        for chunk in seqs.chunks(10_000) {
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(p.alive_expire_at(interval).to_string());
            args.extend(chunk.iter().map(u64::to_string));
            self.eval(
                &SCRIPTS.mark_alive,
                vec![k.key(&format!("alive:{interval}"))],
                args,
            )
            .await?;
        }
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
        let k = RoomKeys::new(room);
        let keys = vec![k.key("active"), k.key("sess"), k.key("holder")];
        let args = vec![
            identity.to_string(),
            now.to_string(),
            p.session_ms.to_string(),
            held.map_or_else(String::new, |g| g.to_string()),
        ];
        match self.eval_acked(&SCRIPTS.claim, keys, args).await? {
            Value::Null => Ok(Claimed::Absent),
            Value::Integer(-1) => Ok(Claimed::Moved),
            v => int(&v, "claim expiry").map(Claimed::Session),
        }
    }

    async fn mark_buyers(&self, room: &RoomId, identities: &[String]) -> Result<u64, StoreError> {
        if identities.is_empty() {
            return Ok(0);
        }
        let k = RoomKeys::new(room);
        let mut n = 0;
        for chunk in identities.chunks(1_000) {
            let keys = vec![k.key("active"), k.key("buying")];
            let reply = self
                .eval(&SCRIPTS.mark_buying, keys, chunk.to_vec())
                .await?;
            n += int(&reply, "mark_buying reply")?;
        }
        Ok(n)
    }

    async fn end(
        &self,
        room: &RoomId,
        identity: &str,
        by: EndedBy,
        until_ms: u64,
    ) -> Result<LeaveOutcome, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![
            k.key("meta"),
            k.key("q"),
            k.key("active"),
            k.key("sess"),
            k.key("gone"),
            k.key("buying"),
            k.key("pre"),
            k.key("pre_left"),
            k.key("holder"),
            k.key("revoked"),
        ];
        let held = match by {
            EndedBy::Holder(gen) => gen.to_string(),
            EndedBy::Operator => String::new(),
        };
        let args = vec![identity.to_string(), held, until_ms.to_string()];
        let reply = self.eval(&SCRIPTS.leave, keys, args).await?;
        match text(&reply, "leave reply")? {
            "waiting" => Ok(LeaveOutcome::LeftQueue),
            "admitted" => Ok(LeaveOutcome::EndedSession),
            "absent" => Ok(LeaveOutcome::Absent),
            "moved" => Ok(LeaveOutcome::Moved),
            other => Err(StoreError::Protocol(format!("leave reply {other}"))),
        }
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
        let k = RoomKeys::new(room);
        let keys = vec![
            k.key("holder"),
            k.key("q"),
            k.key("active"),
            k.key("pre"),
            k.transfer(code),
        ];
        let args = vec![
            identity.to_string(),
            gen.to_string(),
            uid.to_string(),
            ttl_ms.to_string(),
            now.to_string(),
        ];
        let reply = self.eval(&SCRIPTS.offer_transfer, keys, args).await?;
        match text(&reply, "transfer offer")? {
            "offered" => Ok(TransferOffer::Offered),
            "moved" => Ok(TransferOffer::Moved),
            "absent" => Ok(TransferOffer::Absent),
            "taken" => Ok(TransferOffer::Taken),
            other => Err(StoreError::Protocol(format!("transfer offer {other}"))),
        }
    }

    async fn claim_transfer(
        &self,
        room: &RoomId,
        code: &str,
        claim: &str,
        now: u64,
        until_ms: u64,
    ) -> Result<TransferClaim, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![
            k.transfer(code),
            k.key("holder"),
            k.key("revoked"),
            k.key("meta"),
            k.key("q"),
            k.key("active"),
            k.key("pre"),
        ];
        let args = vec![now.to_string(), until_ms.to_string(), claim.to_string()];
        let reply = self.eval_acked(&SCRIPTS.claim_transfer, keys, args).await?;
        let Value::Array(r) = reply else {
            return Err(bad("transfer claim"));
        };
        match r.first().map(|v| text(v, "transfer claim")).transpose()? {
            Some("unknown") => Ok(TransferClaim::Unknown),
            Some("stale") => Ok(TransferClaim::Stale),
            Some("moved") if r.len() == 6 => Ok(TransferClaim::Moved(Transferred {
                identity: text(&r[1], "transfer identity")?.to_string(),
                gen: u32::try_from(int(&r[2], "transfer gen")?).map_err(|_| bad("transfer gen"))?,
                seq: int(&r[3], "transfer seq")?,
                admitted: int(&r[4], "transfer admitted")? == 1,
                uid: text(&r[5], "transfer uid")?.to_string(),
            })),
            _ => Err(bad("transfer claim")),
        }
    }

    async fn revocations(
        &self,
        room: &RoomId,
        from: u64,
    ) -> Result<(Vec<Revocation>, u64), StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![k.key("meta"), k.key("revoked")];
        let args = vec![from.to_string(), REVOCATIONS_PAGE.to_string()];
        let reply = self.eval(&SCRIPTS.revocations, keys, args).await?;
        let Value::Array(r) = reply else {
            return Err(bad("revocations"));
        };
        let next = r
            .first()
            .map(|v| int(v, "revocations next"))
            .transpose()?
            .ok_or_else(|| bad("revocations"))?;
        let entries = r
            .iter()
            .skip(1)
            .map(|v| {
                text(v, "revocation")
                    .ok()
                    .and_then(Revocation::decode)
                    .ok_or_else(|| bad("revocation entry"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((entries, next))
    }

    async fn set_status(&self, room: &RoomId, status: RoomStatus) -> Result<(), StoreError> {
        self.hset_meta(room, vec![("state", status.as_str().to_string())])
            .await
    }

    async fn set_settings(
        &self,
        room: &RoomId,
        admit_per_minute: Option<u32>,
        max_active: Option<u32>,
    ) -> Result<(), StoreError> {
        let mut fields = Vec::new();
        if let Some(rate) = admit_per_minute {
            fields.push(("set_rate", rate.to_string()));
        }
        if let Some(max) = max_active {
            fields.push(("set_max_active", max.to_string()));
        }
        if fields.is_empty() {
            return Ok(());
        }
        self.hset_meta(room, fields).await
    }

    async fn set_message(&self, room: &RoomId, message: &str) -> Result<u64, StoreError> {
        let keys = vec![RoomKeys::new(room).key("meta")];
        let v = self
            .eval(&SCRIPTS.set_message, keys, vec![message.to_string()])
            .await?;
        int(&v, "message version")
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
        let args = vec![
            identity.to_string(),
            room.as_str().to_string(),
            until_ms.to_string(),
            most.to_string(),
            now_ms.to_string(),
            GROUP_HOLD_MARGIN_MS.to_string(),
        ];
        let reply = self
            .eval_acked(&SCRIPTS.group_hold, vec![group_key(group)], args)
            .await?;
        let Value::Array(r) = reply else {
            return Err(bad("group hold"));
        };
        match r.first().map(|v| int(v, "group hold")).transpose()? {
            Some(1) => Ok(GroupHold::Granted),
            Some(0) => Ok(GroupHold::Held(
                r.iter()
                    .skip(1)
                    .map(|v| text(v, "group hold room").map(str::to_string))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(bad("group hold")),
        }
    }

    async fn group_release(
        &self,
        group: &str,
        identity: &str,
        room: &RoomId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let args = vec![
            identity.to_string(),
            room.as_str().to_string(),
            now_ms.to_string(),
        ];
        let v = self
            .eval(&SCRIPTS.group_release, vec![group_key(group)], args)
            .await?;
        Ok(int(&v, "group release")? == 1)
    }

    async fn keep_claim(
        &self,
        room: &RoomId,
        identity: &str,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let k = RoomKeys::new(room);
        let args = vec![
            identity.to_string(),
            deadline_ms.to_string(),
            now_ms.to_string(),
        ];
        let v = self
            .eval(
                &SCRIPTS.keep_claim,
                vec![k.key("active"), k.key("sess")],
                args,
            )
            .await?;
        Ok(int(&v, "keep claim")? == 1)
    }

    async fn message(&self, room: &RoomId) -> Result<(u64, Option<String>), StoreError> {
        let key = RoomKeys::new(room).key("meta");
        let (version, message): (Option<u64>, Option<String>) = self
            .run(self.pool.next().hmget(key, vec!["msg_v", "msg"]))
            .await?;
        Ok((version.unwrap_or(0), message))
    }

    async fn lookup(
        &self,
        room: &RoomId,
        identity: &str,
        p: &RoomParams,
        now: u64,
    ) -> Result<Lookup, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![k.key("meta"), k.key("q"), k.key("active"), k.key("pre")];
        let args = vec![
            k.prefix.clone(),
            identity.to_string(),
            now.to_string(),
            p.interval_ms.to_string(),
            p.idle_ms.to_string(),
        ];
        let reply = array(
            self.eval(&SCRIPTS.lookup, keys, args).await?,
            2,
            "lookup reply",
        )?;
        match text(&reply[0], "lookup status")? {
            "waiting" => Ok(Lookup::Waiting {
                seq: int(&reply[1], "lookup seq")?,
            }),
            "admitted" => Ok(Lookup::Admitted),
            "prequeue" => Ok(Lookup::Prequeue),
            "absent" => Ok(Lookup::Absent),
            other => Err(StoreError::Protocol(format!("lookup status {other}"))),
        }
    }

    async fn commit_seed(&self, room: &RoomId, seed_hex: &str) -> Result<String, StoreError> {
        let k = RoomKeys::new(room);
        let reply = self
            .eval(
                &SCRIPTS.commit_seed,
                vec![k.key("meta")],
                vec![seed_hex.to_string()],
            )
            .await?;
        Ok(text(&reply, "seed")?.to_string())
    }

    async fn freeze_prequeue(&self, room: &RoomId) -> Result<PrequeueState, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![k.key("meta"), k.key("seq"), k.key("pre")];
        let r = array(
            self.eval(&SCRIPTS.freeze_prequeue, keys, Vec::new())
                .await?,
            4,
            "freeze reply",
        )?;
        let (count, assigned) = (int(&r[2], "pre count")?, int(&r[3], "pre assigned")?);
        Ok(PrequeueState {
            waiting: count.saturating_sub(assigned),
            frozen: int(&r[0], "pre frozen")? == 1,
            base: int(&r[1], "pre base")?,
            count,
            assigned,
        })
    }

    async fn prequeue_members(&self, room: &RoomId) -> Result<Vec<String>, StoreError> {
        let key = RoomKeys::new(room).key("pre");
        let mut cursor = "0".to_string();
        let mut members = Vec::new();
        loop {
            let page = array(
                self.eval(
                    &SCRIPTS.pre_scan,
                    vec![key.clone()],
                    vec![cursor, PREQUEUE_PAGE.to_string()],
                )
                .await?,
                2,
                "pre-queue page",
            )?;
            cursor = text(&page[0], "pre-queue cursor")?.to_string();
            match &page[1] {
                Value::Array(items) => {
                    for item in items {
                        members.push(text(item, "pre-queue member")?.to_string());
                    }
                }
                _ => return Err(bad("pre-queue members")),
            }
            if cursor == "0" {
                break;
            }
        }
        // SSCAN may return a member more than once.
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }

    async fn assign_prequeue(
        &self,
        room: &RoomId,
        p: &RoomParams,
        start: u64,
        ids: &[String],
        now: u64,
    ) -> Result<u64, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![
            k.key("meta"),
            k.key("q"),
            k.key("pre"),
            k.key("pre_left"),
            k.key("gone"),
        ];
        let mut args = Vec::with_capacity(ids.len() + 5);
        args.extend([
            k.prefix.clone(),
            now.to_string(),
            p.interval_ms.to_string(),
            p.idle_ms.to_string(),
            start.to_string(),
        ]);
        args.extend(ids.iter().cloned());
        let reply = self.eval(&SCRIPTS.open_prequeue, keys, args).await?;
        int(&reply, "pre-queue assigned")
    }

    async fn claim_once(&self, key: &str, ttl_ms: u64, _now: u64) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .run(self.pool.next().set(
                key,
                "1",
                Some(Expiration::PX(ttl_ms as i64)),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
        Ok(set.is_some())
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
        let k = RoomKeys::new(room);
        let keys = vec![
            k.key("meta"),
            k.key("leases"),
            k.key("active"),
            k.key("buying"),
        ];
        let [_, max_active, _, _, cap] = room_args(p);
        let args = vec![
            node.to_string(),
            now.to_string(),
            want.to_string(),
            ttl_ms.to_string(),
            max_active,
            cap,
        ];
        let r = array(self.eval(&SCRIPTS.lease, keys, args).await?, 3, "lease")?;
        Ok(Lease {
            slots: int(&r[0], "lease slots")?,
            holders: int(&r[1], "lease holders")?,
            leased: int(&r[2], "leased")?,
        })
    }

    async fn reconcile(
        &self,
        room: &RoomId,
        node: &str,
        admitted: &[(String, u64)],
        p: &RoomParams,
        now: u64,
    ) -> Result<u64, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![
            k.key("meta"),
            k.key("q"),
            k.key("active"),
            k.key("sess"),
            k.key("leases"),
        ];
        let [per_min, _, burst, _, _] = room_args(p);
        let mut args = Vec::with_capacity(4 + 2 * admitted.len());
        args.extend([node.to_string(), now.to_string(), per_min, burst]);
        for (identity, exp) in admitted {
            args.extend([identity.clone(), exp.to_string()]);
        }
        int(
            &self.eval_acked(&SCRIPTS.reconcile, keys, args).await?,
            "reconcile",
        )
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(self.pool.next().ping::<()>(None)).await
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn connection_error(&self) -> Option<String> {
        self.last_connection_error()
    }
}
