//! A room on this node: its settings, its cached snapshot, the buffer of waiters seen since
//! the last flush, and its join pressure (proof of work). Everything a poll needs is here, in
//! memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::eta::seconds_for;
use super::message::RoomMessage;
use super::outage::Outage;
use super::pressure::{PowPolicy, Pressure};
use super::revoked::Revocations;
use super::snapshot::{Located, Snapshot};
use crate::config::{PowMode, RoomConfig};
use crate::id::RoomId;
use crate::ops::metrics::{
    POW_DIFFICULTY, ROOM_ACTIVE, ROOM_ADMISSION_RATE, ROOM_ADMITTED, ROOM_CONFIGURED_RATE,
    ROOM_ETA_P50, ROOM_ETA_P90, ROOM_EVICTIONS, ROOM_JOINS, ROOM_LEASE_SLOTS, ROOM_LEAVES,
    ROOM_MAX_ACTIVE, ROOM_REVOCATIONS, ROOM_STATE_AGE, ROOM_STATUS, ROOM_STORE_MODE, ROOM_WAITING,
};
use crate::store::{RoomParams, RoomState, RoomStatus};

/// Most seen-records buffered while the store is unreachable; beyond it new ones are dropped
/// (those waiters may then be evicted as idle, which is the safe side of an outage).
const MAX_PENDING_SEEN: usize = 1_000_000;

/// Fastest and slowest poll interval the server asks for.
const POLL_MIN_MS: u64 = 1_000;
const POLL_MAX_MS: u64 = 10_000;

/// ETA range in seconds; `None` while nothing is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eta {
    /// Typical wait.
    pub p50: Option<u64>,
    /// Pessimistic wait.
    pub p90: Option<u64>,
}

/// What the sale behind a room allows, as last read from the store by the sale's keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockGate {
    /// Most admitted sessions that have not reserved yet (see [`RoomParams::admit_cap`]).
    pub admit_cap: u64,
    /// Units still available to reserve.
    pub remaining: u64,
    /// Nothing available and nothing reserved that could come back: waiters are told so.
    pub sold_out: bool,
    /// Restocks of the sale ever ([`crate::store::sale::SaleState::restocks`]): a waiter who
    /// saw the room sold out is told once per restock.
    pub restocks: u64,
}

impl StockGate {
    /// Before the first read of the stock: admit nobody, claim nothing about the sale.
    pub const UNKNOWN: StockGate = StockGate {
        admit_cap: 0,
        remaining: 0,
        sold_out: false,
        restocks: 0,
    };
}

/// One room on this node.
pub struct Room {
    /// The room id.
    pub id: RoomId,
    /// Its settings.
    pub config: RoomConfig,
    /// Store parameters derived from the settings.
    pub params: RoomParams,
    snapshot: ArcSwap<Snapshot>,
    /// Watermark learned from this node's own instant admissions, ahead of the next refresh.
    served_floor: AtomicU64,
    seen: Mutex<Vec<(u64, u64)>>,
    /// `None` for a room that sells nothing.
    stock: ArcSwapOption<StockGate>,
    /// Buyers since the last flush (written to the store by the pacer in one call).
    buyers: Mutex<HashSet<String>>,
    /// Moved places and ended sessions, learned from the store's feed every refresh.
    pub revoked: Revocations,
    /// Sessions this node claimed, with their passes: an admitted ticket's later polls.
    pub sessions: super::SessionPasses,
    /// Requests for a new place on this node, for the proof-of-work difficulty.
    pressure: Pressure,
    /// Whether the store is failing for this room, and the node's lease for an outage.
    pub outage: Outage,
    /// The message of the config, shown while no live one is set.
    configured_message: RoomMessage,
    /// When the event streams were last woken (ms).
    last_wake: AtomicU64,
    /// Bumped by a publish a waiter can see (and by stock changes): the one broadcast every open event
    /// stream of the room waits on. [`RETIRED`] when a reload replaced this room object.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Longest time a room's event streams go without a wake while it publishes (ms): their ETAs
/// follow the measured rate at least this often.
pub const QUIET_WAKE_MS: u64 = 5_000;

/// The [`Room::changes`] value of a room object a reload replaced: its streams end (clients
/// reconnect to the new one).
pub const RETIRED: u64 = u64::MAX;

impl Room {
    /// A room with an empty snapshot; the pacer fills it within one refresh.
    pub fn new(id: RoomId, config: RoomConfig) -> Self {
        let params = params_for(&config);
        let configured_message = RoomMessage::configured(&config);
        Self {
            id,
            config,
            params,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            served_floor: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            stock: ArcSwapOption::empty(),
            buyers: Mutex::new(HashSet::new()),
            revoked: Revocations::default(),
            sessions: super::SessionPasses::default(),
            pressure: Pressure::new(),
            outage: Outage::default(),
            configured_message,
            last_wake: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver of this room's change counter (see [`Room::changes`]): it wakes at every
    /// refresh that changed what a waiter sees (and at least every [`QUIET_WAKE_MS`]), once per
    /// change however many streams wait.
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Ends the event streams of this room object (a reload replaced it).
    pub fn retire(&self) {
        self.changes.send_replace(RETIRED);
    }

    /// Wakes the event streams (something they show changed: stock, the room's settings).
    pub fn announce(&self) {
        self.last_wake
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.changes.send_modify(|v| {
            if *v != RETIRED {
                *v += 1;
            }
        });
    }

    /// The room's message for a reader of `lang`: the operator's live one when set (as this
    /// node last read it), else the configured one.
    pub fn message_for(&self, lang: &str) -> String {
        let snap = self.snapshot();
        match snap.live_message() {
            Some(live) => live.text_for(lang).to_string(),
            None => self.configured_message.text_for(lang).to_string(),
        }
    }

    /// Whether the message shown is an operator's live one.
    pub fn has_live_message(&self) -> bool {
        self.snapshot().live_message().is_some()
    }

    /// The language of a request with this `Accept-Language` header, among the room's.
    pub fn language(&self, accept_language: Option<&str>) -> &str {
        crate::i18n::negotiate(
            accept_language,
            &self.config.languages,
            &self.config.default_language,
        )
    }

    /// The room's join pressure on this node (proof of work).
    pub fn pressure(&self) -> &Pressure {
        &self.pressure
    }

    /// The work a request for a new place from `client` needs now (leading zero bits), or
    /// `None`, by the room's `pow` settings and the admission rate in force (see
    /// [`Pressure::difficulty`]).
    pub fn pow_difficulty(&self, client: std::net::IpAddr, now_ms: u64) -> Option<u8> {
        let (admit_per_minute, _) = self.settings_in_force(&self.snapshot().state);
        self.pressure.difficulty(
            client,
            admit_per_minute,
            now_ms,
            PowPolicy::of(&self.config),
        )
    }

    /// Buffers an admitted shopper who reserved stock; the pacer records it in the store before
    /// its next tick. Until then the shopper still counts as not buying, which only makes
    /// admission more cautious for one refresh. A shopper who buys again before the flush is
    /// buffered once (a set: no allocation and no store work for the repeat).
    pub fn note_buyer(&self, identity: &str) {
        let mut buyers = self.buyers.lock().unwrap_or_else(|p| p.into_inner());
        if buyers.len() < MAX_PENDING_SEEN && !buyers.contains(identity) {
            buyers.insert(identity.to_string());
        }
    }

    /// Takes the buffered buyers, each once.
    pub fn take_buyers(&self) -> Vec<String> {
        std::mem::take(&mut *self.buyers.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Puts buyers back after a failed flush.
    pub fn restore_buyers(&self, back: Vec<String>) {
        self.buyers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(back);
    }

    /// Store parameters for an operation now: the settings plus the sale's current admission
    /// cap. Join and tick must use these so no node admits past the stock.
    pub fn params_now(&self) -> RoomParams {
        RoomParams {
            admit_cap: self.stock_gate().map(|g| g.admit_cap),
            ..self.params
        }
    }

    /// The sale gate, or `None` when the room sells nothing.
    pub fn stock_gate(&self) -> Option<StockGate> {
        self.stock.load().as_deref().copied()
    }

    /// Lowers the sale gate right after a purchase on this node, ahead of the keeper's next
    /// read, so this node's pacer never admits against stock that was just sold. Never raises it.
    pub fn note_sold(&self, remaining: u64, admit_cap: u64) {
        if let Some(g) = self.stock_gate() {
            self.set_stock_gate(StockGate {
                admit_cap: g.admit_cap.min(admit_cap),
                remaining: g.remaining.min(remaining),
                sold_out: g.sold_out,
                restocks: g.restocks,
            });
        }
    }

    /// Sets the sale gate (the sale keeper calls this after every stock read).
    pub fn set_stock_gate(&self, gate: StockGate) {
        let old = self.stock.swap(Some(Arc::new(gate)));
        // Sold out, restocked, remaining units: what a waiter's stream shows.
        if old.is_some_and(|o| *o != gate) {
            self.announce();
        }
    }

    /// The current cached state (lock-free read).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Publishes a new cached state, and wakes the room's event streams when a waiter could see
    /// a difference ([`Snapshot::view`]), or when [`QUIET_WAKE_MS`] passed without a wake (the
    /// ETA drifts with the measured rate). Every open stream does work when woken, so a
    /// refresh that changed nothing a waiter sees wakes none.
    pub fn publish(&self, snapshot: Snapshot) {
        let view = snapshot.view();
        let old = self.snapshot.swap(Arc::new(snapshot));
        let quiet = crate::clock::now_ms().saturating_sub(self.last_wake.load(Ordering::Relaxed));
        if old.view() != view || quiet >= QUIET_WAKE_MS {
            self.announce();
        }
    }

    /// Where waiter `seq` stands, from the cache.
    pub fn locate(&self, seq: u64) -> Located {
        self.snapshot()
            .locate_with_floor(seq, self.served_floor.load(Ordering::Relaxed))
    }

    /// Notes that this node admitted `seq` at join: every seq up to it is past the head, even
    /// before the next refresh shows it (so the next poll does not read "waiting").
    pub fn note_admitted(&self, seq: u64) {
        self.served_floor.fetch_max(seq, Ordering::Relaxed);
    }

    /// Records a poll by waiter `seq` at `now_ms`, for the next batched liveness write.
    pub fn record_seen(&self, seq: u64, now_ms: u64) {
        let interval = self.params.interval_of(now_ms);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_PENDING_SEEN {
            seen.push((interval, seq));
        }
    }

    /// Takes the buffered seen-records, grouped by liveness interval, deduplicated.
    pub fn take_seen(&self) -> HashMap<u64, Vec<u64>> {
        let taken = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        let mut by_interval: HashMap<u64, Vec<u64>> = HashMap::new();
        for (interval, seq) in taken {
            by_interval.entry(interval).or_default().push(seq);
        }
        for seqs in by_interval.values_mut() {
            seqs.sort_unstable();
            seqs.dedup();
        }
        by_interval
    }

    /// Puts records back after a failed flush (bounded, oldest kept).
    pub fn restore_seen(&self, batch: HashMap<u64, Vec<u64>>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (interval, seqs) in batch {
            let room = MAX_PENDING_SEEN.saturating_sub(seen.len());
            seen.extend(seqs.into_iter().take(room).map(|s| (interval, s)));
        }
    }

    /// ETA range for a waiter at `position`.
    pub fn eta(&self, position: u64) -> Eta {
        let rates = self.snapshot().rates;
        Eta {
            p50: seconds_for(position, rates.p50),
            p90: seconds_for(position, rates.p90),
        }
    }

    /// How long a waiter at `position` should wait before polling again: often near the head,
    /// rarely far back, and always well inside the idle timeout so a polling waiter stays alive.
    pub fn poll_after_ms(&self, eta: &Eta) -> u64 {
        let ceiling = (self.params.idle_ms / 3).clamp(200, POLL_MAX_MS);
        let wanted = eta.p50.map_or(POLL_MAX_MS, |s| s.saturating_mul(1000) / 5);
        wanted.clamp(POLL_MIN_MS.min(ceiling), ceiling)
    }

    /// The admission rate (per second) the settings in force allow (live ones from the last
    /// tick, else the configured ones): the pacing rate, bounded by how fast sessions turn over
    /// when the room is full (`active` at the cap).
    pub fn configured_rate(&self, state: &RoomState) -> f64 {
        let (per_minute, max_active) = self.settings_in_force(state);
        let pacing = f64::from(per_minute) / 60.0;
        if state.active < u64::from(max_active) {
            return pacing;
        }
        let turnover = f64::from(max_active) / f64::from(self.config.session_seconds);
        pacing.min(turnover)
    }

    /// `(admit_per_minute, max_active)` in force: from the store's last answer when known.
    pub fn settings_in_force(&self, state: &RoomState) -> (u32, u32) {
        if state.admit_per_minute == 0 && state.max_active == 0 {
            return (self.config.admit_per_minute, self.config.max_active);
        }
        (state.admit_per_minute, state.max_active)
    }

    /// Copies this room's cached state into its Prometheus gauges. Reads memory only (the
    /// snapshot the pacer refreshed), never the store; called right before `/metrics` renders.
    pub fn observe_metrics(&self) {
        let id = self.config.id.clone();
        let snapshot = self.snapshot();
        if self.config.pow != PowMode::Off {
            let (admit_per_minute, _) = self.settings_in_force(&snapshot.state);
            let bits = self.pressure.room_difficulty(
                admit_per_minute,
                crate::clock::now_ms(),
                PowPolicy::of(&self.config),
            );
            metrics::gauge!(POW_DIFFICULTY, "room" => id.clone()).set(bits.map_or(0.0, f64::from));
        }
        let Some(taken_at) = snapshot.taken_at else {
            return; // nothing read from the store yet: report nothing rather than zeros
        };
        let state = &snapshot.state;
        metrics::gauge!(ROOM_WAITING, "room" => id.clone()).set(state.waiting as f64);
        metrics::gauge!(ROOM_ACTIVE, "room" => id.clone()).set(state.active as f64);
        metrics::gauge!(ROOM_MAX_ACTIVE, "room" => id.clone()).set(self.config.max_active);
        metrics::counter!(ROOM_ADMITTED, "room" => id.clone()).absolute(state.admitted_total);
        metrics::counter!(ROOM_JOINS, "room" => id.clone()).absolute(state.last_seq);
        metrics::counter!(ROOM_EVICTIONS, "room" => id.clone()).absolute(state.evicted_total);
        metrics::counter!(ROOM_LEAVES, "room" => id.clone()).absolute(state.left_total);
        metrics::gauge!(ROOM_ADMISSION_RATE, "room" => id.clone()).set(snapshot.rates.p50);
        metrics::gauge!(ROOM_CONFIGURED_RATE, "room" => id.clone())
            .set(f64::from(self.config.admit_per_minute) / 60.0);
        let eta = self.eta(state.waiting);
        let seconds = |s: Option<u64>| match (state.waiting, s) {
            (0, _) => 0.0,
            (_, Some(s)) => s as f64,
            (_, None) => f64::NAN,
        };
        metrics::gauge!(ROOM_ETA_P50, "room" => id.clone()).set(seconds(eta.p50));
        metrics::gauge!(ROOM_ETA_P90, "room" => id.clone()).set(seconds(eta.p90));
        for status in RoomStatus::ALL {
            let on = if state.status == status { 1.0 } else { 0.0 };
            metrics::gauge!(ROOM_STATUS, "room" => id.clone(), "status" => status.as_str()).set(on);
        }
        metrics::gauge!(ROOM_REVOCATIONS, "room" => id.clone()).set(self.revoked.len() as f64);
        let mode = self.outage.mode_name();
        for m in ["normal", "capped", "fail_closed", "fail_open"] {
            let on = if m == mode { 1.0 } else { 0.0 };
            metrics::gauge!(ROOM_STORE_MODE, "room" => id.clone(), "mode" => m).set(on);
        }
        if self.outage.capped() {
            let slots = self.outage.lease_view(crate::clock::now_ms()).slots;
            metrics::gauge!(ROOM_LEASE_SLOTS, "room" => id.clone()).set(slots as f64);
        }
        metrics::gauge!(ROOM_STATE_AGE, "room" => id).set(taken_at.elapsed().as_secs_f64());
    }
}

/// Store parameters for a room's settings. The liveness interval is a tenth of the idle timeout
/// (at least 100 ms), so eviction happens within 10% of the configured timeout.
pub fn params_for(config: &RoomConfig) -> RoomParams {
    let idle_ms = u64::from(config.idle_timeout_seconds) * 1000;
    RoomParams {
        admit_per_minute: config.admit_per_minute,
        max_active: config.max_active,
        burst: RoomParams::burst_for(config.admit_per_minute),
        idle_ms,
        interval_ms: (idle_ms / 10).max(100),
        session_ms: u64::from(config.session_seconds) * 1000,
        admit_cap: None,
        prequeue_until_ms: super::schedule::Schedule::of(config)
            .prequeue_opens_at
            .and(config.opens_at.map(super::schedule::unix_ms)),
        instant: config.mode != crate::config::RoomMode::Queue,
        hold: config.mode == crate::config::RoomMode::Closed,
    }
}

/// Every room of the configuration, by id.
#[derive(Clone, Default)]
pub struct Rooms {
    by_id: Arc<HashMap<String, Arc<Room>>>,
}

impl Rooms {
    /// Builds the rooms of a validated configuration (ids that fail to parse are skipped; the
    /// config validation already rejected them).
    pub fn new(configs: &[RoomConfig]) -> Self {
        let by_id = configs
            .iter()
            .filter_map(|c| {
                RoomId::parse(&c.id).map(|id| (c.id.clone(), Arc::new(Room::new(id, c.clone()))))
            })
            .collect();
        Self {
            by_id: Arc::new(by_id),
        }
    }

    /// Rooms from an id → room map (hot reload builds one from kept and new rooms).
    pub fn from_map(by_id: HashMap<String, Arc<Room>>) -> Self {
        Self {
            by_id: Arc::new(by_id),
        }
    }

    /// The room with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Room>> {
        self.by_id.get(id)
    }

    /// All rooms.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Room>> {
        self.by_id.values()
    }
}
