//! Redis store (fred): every multi-key operation is one Lua script from `store/lua/`, run with
//! EVALSHA and reloaded on NOSCRIPT. This is the only file that names a fred type.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use fred::prelude::*;
use fred::types::scripts::Script;

use crate::ops::metrics::{STORE_COMMANDS, STORE_ERRORS, STORE_LATENCY};

use super::batch::Batcher;
use super::redis_sale::PurchaseCall;
use super::sale::PurchaseOutcome;
use super::{
    GoneBits, JoinOutcome, LeaveOutcome, Lookup, PrequeueState, RoomParams, RoomState, RoomStatus,
    Store, StoreError, MAX_HEAD_CHECKS,
};
use crate::id::RoomId;

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
}

impl Scripts {
    fn new() -> Self {
        Self {
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
        }
    }
}

/// Redis-backed store. Clone is cheap; all clones share one connection pool.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    scripts: Arc<Scripts>,
    healthy: Arc<AtomicBool>,
    batchers: Arc<Batchers>,
}

/// Most calls one coalesced script run takes: bounds a batch's time inside Redis (well under a
/// millisecond) and the reply size.
const MAX_BATCH: usize = 128;

/// Batches of one room (or sale) in flight at once. Redis runs one script at a time, so a second
/// batch would only wait inside Redis; holding it here instead lets it grow, and on a shared
/// core that measured 20% more joins per second than one batch per pool connection.
const IN_FLIGHT: usize = 1;

/// One dispatcher per room for joins and per sale for purchases, made on first use (rooms and
/// sales come from the config, so the maps stay small).
#[derive(Default)]
pub(super) struct Batchers {
    joins: DashMap<RoomId, Arc<Batcher<JoinCall, JoinOutcome>>>,
    pub(super) purchases: DashMap<String, Arc<Batcher<PurchaseCall, PurchaseOutcome>>>,
}

/// A join waiting for its batch.
struct JoinCall {
    identity: String,
    minted: bool,
    params: RoomParams,
    now: u64,
}

/// Key names of one room.
struct RoomKeys {
    prefix: String,
}

impl RoomKeys {
    fn new(room: &RoomId) -> Self {
        Self {
            prefix: format!("rg:{{{}}}:", room.as_str()),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl RedisStore {
    /// Builds the pool and starts connecting in the background. Never waits for Redis: a store
    /// that is down at start makes the node unready, and it recovers when Redis comes up.
    pub fn connect(
        url: &str,
        pool_size: usize,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let mut config = Config::from_url(url)
            .map_err(|e| StoreError::Unavailable(format!("bad redis_url: {e}")))?;
        config.fail_fast = false;
        let pool = Builder::from_config(config)
            .with_performance_config(|perf| {
                perf.default_command_timeout = command_timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = command_timeout;
                conn.internal_command_timeout = command_timeout;
                // A write that may have run must not be replayed blindly on another connection.
                conn.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build_pool(pool_size)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // The handles end when the pool quits; reconnection runs inside them.
        let _handles = pool.connect_pool();
        Ok(Self {
            pool,
            scripts: Arc::new(Scripts::new()),
            healthy: Arc::new(AtomicBool::new(false)),
            batchers: Arc::default(),
        })
    }

    /// Waits until every connection is up (or fails after `timeout`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), StoreError> {
        tokio::time::timeout(timeout, self.pool.wait_for_connect())
            .await
            .map_err(|_| StoreError::Unavailable("timed out connecting to redis".into()))?
            .map_err(|e| self.fail(e))
    }

    /// Length of a stream (order events, coupon log).
    pub(super) async fn stream_len(&self, key: &str) -> Result<u64, StoreError> {
        self.run(self.pool.next().xlen::<u64, _>(key)).await
    }

    /// Sends one command: counts it, maps a failure to unavailable or protocol, and keeps the
    /// readiness flag truthful. Every store call goes through here.
    async fn run<T>(
        &self,
        command: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        metrics::counter!(STORE_COMMANDS).increment(1);
        let value = command.await.map_err(|e| self.fail(e))?;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(value)
    }

    /// Sets fields of a room's meta hash (lifecycle state, live settings).
    async fn hset_meta(
        &self,
        room: &RoomId,
        fields: Vec<(&str, String)>,
    ) -> Result<(), StoreError> {
        let key = RoomKeys::new(room).key("meta");
        self.run(self.pool.next().hset::<(), _, _>(key, fields))
            .await
    }

    fn fail(&self, e: Error) -> StoreError {
        // A command that found no connection to write to (the server just went away) fails with
        // kind Unknown before the pool notices; `is_connected` is true while any pool client
        // still reads connected, so it cannot be relied on to catch that case.
        let unavailable = matches!(
            e.kind(),
            ErrorKind::IO
                | ErrorKind::Timeout
                | ErrorKind::Canceled
                | ErrorKind::Backpressure
                | ErrorKind::Routing
        ) || e.details().starts_with("Failed to route command")
            || !self.pool.is_connected();
        if unavailable {
            self.healthy.store(false, Ordering::Relaxed);
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Protocol(e.to_string())
        }
    }

    pub(super) async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, StoreError> {
        let started = std::time::Instant::now();
        let result = self
            .run(script.evalsha_with_reload::<Value, _, _>(self.pool.next(), keys, args))
            .await;
        metrics::histogram!(STORE_LATENCY).record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(STORE_ERRORS).increment(1);
        }
        result
    }

    /// A handle for a dispatcher task: same connections, but it does not hold the dispatchers
    /// themselves (that would keep them, and their tasks, alive forever).
    fn for_dispatcher(&self) -> RedisStore {
        RedisStore {
            batchers: Arc::default(),
            ..self.clone()
        }
    }

    /// The dispatcher of one room's (or sale's) calls of one operation, made on first use.
    pub(super) fn batcher<K, Q, R, F, Fut>(
        &self,
        map: impl Fn(&Batchers) -> &DashMap<K, Arc<Batcher<Q, R>>>,
        key: &K,
        run: F,
    ) -> Arc<Batcher<Q, R>>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        Q: Send + 'static,
        R: Send + 'static,
        F: Fn(RedisStore, K, Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>>
            + Send
            + 'static,
    {
        let batchers = map(&self.batchers);
        if let Some(b) = batchers.get(key) {
            return b.clone();
        }
        batchers
            .entry(key.clone())
            .or_insert_with(|| {
                let (store, key) = (self.for_dispatcher(), key.clone());
                let run = Arc::new(run);
                Arc::new(Batcher::spawn(MAX_BATCH, IN_FLIGHT, move |calls| {
                    run(store.clone(), key.clone(), calls)
                }))
            })
            .clone()
    }

    fn join_batcher(&self, room: &RoomId) -> Arc<Batcher<JoinCall, JoinOutcome>> {
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
    ) -> Result<Vec<Result<JoinOutcome, StoreError>>, StoreError> {
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
            self.eval(&self.scripts.join, keys, args).await?,
            3 * n,
            "join reply",
        )?;
        Ok(reply.chunks(3).map(join_outcome).collect())
    }
}

pub(super) fn int(v: &Value, what: &str) -> Result<u64, StoreError> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| bad(what)),
        Value::String(s) => s.parse::<u64>().map_err(|_| bad(what)),
        _ => Err(bad(what)),
    }
}

pub(super) fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, StoreError> {
    v.as_str_ref().ok_or_else(|| bad(what))
}

trait AsStrRef {
    fn as_str_ref(&self) -> Option<&str>;
}

impl AsStrRef for Value {
    fn as_str_ref(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

fn bad(what: &str) -> StoreError {
    StoreError::Protocol(format!("cannot read {what}"))
}

pub(super) fn array(v: Value, len: usize, what: &str) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) if items.len() == len => Ok(items),
        _ => Err(bad(what)),
    }
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}

/// One {status, seq, created} triple of a join.lua reply.
fn join_outcome(reply: &[Value]) -> Result<JoinOutcome, StoreError> {
    let [status, seq, created] = reply else {
        return Err(bad("join reply"));
    };
    let seq = int(seq, "join seq")?;
    let created = int(created, "join created")? == 1;
    match text(status, "join status")? {
        "waiting" => Ok(JoinOutcome::Waiting { seq, created }),
        "admitted" => Ok(JoinOutcome::Admitted { seq, created }),
        "prequeue" => Ok(JoinOutcome::Prequeue { created }),
        "closed" => Ok(JoinOutcome::Closed),
        other => Err(StoreError::Protocol(format!("join status {other}"))),
    }
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
    async fn join(
        &self,
        room: &RoomId,
        identity: &str,
        minted: bool,
        p: &RoomParams,
        now: u64,
    ) -> Result<JoinOutcome, StoreError> {
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
            self.eval(&self.scripts.tick, keys, args).await?,
            18,
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
                &self.scripts.mark_alive,
                vec![k.key(&format!("alive:{interval}"))],
                args,
            )
            .await?;
        }
        Ok(())
    }

    async fn claim(
        &self,
        room: &RoomId,
        identity: &str,
        p: &RoomParams,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let k = RoomKeys::new(room);
        let keys = vec![k.key("active"), k.key("sess")];
        let args = vec![
            identity.to_string(),
            now.to_string(),
            p.session_ms.to_string(),
        ];
        match self.eval(&self.scripts.claim, keys, args).await? {
            Value::Null => Ok(None),
            v => int(&v, "claim expiry").map(Some),
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
                .eval(&self.scripts.mark_buying, keys, chunk.to_vec())
                .await?;
            n += int(&reply, "mark_buying reply")?;
        }
        Ok(n)
    }

    async fn leave(&self, room: &RoomId, identity: &str) -> Result<LeaveOutcome, StoreError> {
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
        ];
        let reply = self
            .eval(&self.scripts.leave, keys, vec![identity.to_string()])
            .await?;
        match text(&reply, "leave reply")? {
            "waiting" => Ok(LeaveOutcome::LeftQueue),
            "admitted" => Ok(LeaveOutcome::EndedSession),
            "absent" => Ok(LeaveOutcome::Absent),
            other => Err(StoreError::Protocol(format!("leave reply {other}"))),
        }
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
            self.eval(&self.scripts.lookup, keys, args).await?,
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
                &self.scripts.commit_seed,
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
            self.eval(&self.scripts.freeze_prequeue, keys, Vec::new())
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
                    &self.scripts.pre_scan,
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
        let reply = self.eval(&self.scripts.open_prequeue, keys, args).await?;
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(self.pool.next().ping::<()>(None)).await
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
