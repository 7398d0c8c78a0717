//! Prometheus metrics: one process-wide recorder (the `metrics` facade allows only one), served
//! by the admin listener's `/metrics`; the exporter spawns nothing, so upkeep runs here.
//!
//! Every metric name is a constant of this file, described once in [`install`] with its unit.
//! Counters and histograms are recorded where things happen (router, store, sale handlers,
//! proxy, limiter); room and sale gauges are copied from each node's cached state by
//! `Room::observe_metrics` and `Sale::observe_metrics` right before a scrape renders (the
//! `/metrics` probe calls them), so a scrape never waits for the store. This file imports
//! nothing of the crate: it is the leaf every layer records through.
//!
//! Room and sale totals (admitted, joins, evictions, leaves, stock) are the store's shared
//! values: every node reports the same number, so dashboards aggregate them with `max by (room)`,
//! not `sum`. Request, store, purchase and proxy series are per node: aggregate them with `sum`.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use metrics::{Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// Build information: value 1, label `version`.
pub const BUILD_INFO: &str = "rushgate_build_info";

/// Gauge `{room}`: waiters in the queue (idle ones included until evicted).
pub const ROOM_WAITING: &str = "rushgate_room_waiting";
/// Gauge `{room}`: admitted sessions alive now, across all nodes.
pub const ROOM_ACTIVE: &str = "rushgate_room_active";
/// Gauge `{room}`: the configured cap on admitted sessions (`max_active`).
pub const ROOM_MAX_ACTIVE: &str = "rushgate_room_max_active";
/// Counter `{room}`: admissions ever (shared store total).
pub const ROOM_ADMITTED: &str = "rushgate_room_admitted_total";
/// Counter `{room}`: places ever handed out, i.e. distinct joins (shared store total).
pub const ROOM_JOINS: &str = "rushgate_room_joins_total";
/// Counter `{room}`: idle waiters and unclaimed sessions evicted (shared store total).
pub const ROOM_EVICTIONS: &str = "rushgate_room_evictions_total";
/// Counter `{room}`: places and sessions given up (shared store total).
pub const ROOM_LEAVES: &str = "rushgate_room_leaves_total";
/// Gauge `{room}`: measured admission rate (typical, the ETA's p50), per second.
pub const ROOM_ADMISSION_RATE: &str = "rushgate_room_admission_rate_per_second";
/// Gauge `{room}`: configured pacing (`admit_per_minute / 60`), per second.
pub const ROOM_CONFIGURED_RATE: &str = "rushgate_room_configured_rate_per_second";
/// Gauge `{room}`: ETA p50 of a shopper joining now (the tail of the queue); 0 when nobody
/// waits, NaN while nothing is admitted (paused).
pub const ROOM_ETA_P50: &str = "rushgate_room_eta_p50_seconds";
/// Gauge `{room}`: ETA p90 of a shopper joining now; as [`ROOM_ETA_P50`].
pub const ROOM_ETA_P90: &str = "rushgate_room_eta_p90_seconds";
/// Gauge `{room, status}`: 1 for the room's current lifecycle status, 0 for the others.
pub const ROOM_STATUS: &str = "rushgate_room_status";
/// Gauge `{room}`: age of this node's cached room state; grows while the store is unreachable.
pub const ROOM_STATE_AGE: &str = "rushgate_room_state_age_seconds";
/// Gauge `{room}`: moved places and ended sessions this node refuses tickets and passes of
/// (kept until those would have expired anyway).
pub const ROOM_REVOCATIONS: &str = "rushgate_room_revocations";

/// Gauge `{sale}`: units anyone can buy now.
pub const SALE_AVAILABLE: &str = "rushgate_sale_available_units";
/// Gauge `{sale}`: units held by live reservations.
pub const SALE_RESERVED: &str = "rushgate_sale_reserved_units";
/// Gauge `{sale}`: units paid for.
pub const SALE_CONFIRMED: &str = "rushgate_sale_confirmed_units";
/// Gauge `{sale}`: units ever put on sale.
pub const SALE_TOTAL: &str = "rushgate_sale_total_units";
/// Counter `{sale, outcome}`: purchase attempts by outcome (recorded by this node).
pub const PURCHASES: &str = "rushgate_purchases_total";
/// Counter `{campaign}`: coupons issued by this node.
pub const COUPONS_ISSUED: &str = "rushgate_coupons_issued_total";

/// Counter `{route, status}`: requests answered.
pub const HTTP_REQUESTS: &str = "rushgate_http_requests_total";
/// Histogram `{route, status}`: time from routing to response head, seconds.
pub const HTTP_DURATION: &str = "rushgate_http_request_duration_seconds";

/// Counter: store commands sent (scripts and plain commands).
pub const STORE_COMMANDS: &str = "rushgate_store_commands_total";
/// Histogram: store script latency, seconds.
pub const STORE_LATENCY: &str = "rushgate_store_latency_seconds";
/// Counter: store commands that failed (unreachable, timeout, protocol).
pub const STORE_ERRORS: &str = "rushgate_store_errors_total";

/// Histogram `{upstream, status}`: time to the upstream (shop) response headers, seconds.
pub const PROXY_UPSTREAM_DURATION: &str = "rushgate_proxy_upstream_duration_seconds";
/// Counter `{upstream, kind}`: proxied requests that got no upstream response (`connect`,
/// `timeout`, `other`).
pub const PROXY_UPSTREAM_ERRORS: &str = "rushgate_proxy_upstream_errors_total";

/// Counter `{event, outcome}`: webhook deliveries (`delivered`, `gave_up` after retries).
pub const WEBHOOK_DELIVERIES: &str = "rushgate_webhook_deliveries_total";

/// Counter `{endpoint}`: requests refused with 429 by a rate limit (`join`, `poll`,
/// `purchase`, `coupon`).
pub const LIMITER_REJECTIONS: &str = "rushgate_limiter_rejections_total";

/// Counter `{room}`: proof-of-work challenges issued by this node.
pub const POW_CHALLENGES: &str = "rushgate_pow_challenges_total";
/// Counter `{room}`: proof-of-work solutions accepted by this node (each made one place).
pub const POW_SOLVED: &str = "rushgate_pow_solved_total";
/// Counter `{room, reason}`: proof-of-work solutions refused by this node (`malformed`,
/// `bad_mac`, `wrong_room`, `other_address`, `expired`, `not_enough_work`, `replayed`).
pub const POW_REFUSED: &str = "rushgate_pow_refused_total";
/// Gauge `{room}`: the proof-of-work difficulty in force on this node, in leading zero bits,
/// for an address that made no joins of its own (0: no work asked). Rooms with `pow = "off"`
/// export none.
pub const POW_DIFFICULTY: &str = "rushgate_pow_difficulty_bits";

/// Gauge `{room, mode}`: 1 for the mode this node serves the room in now (`normal`, or while
/// the store is unreachable `capped`, `fail_closed` or `fail_open`), else 0.
pub const ROOM_STORE_MODE: &str = "rushgate_room_store_mode";
/// Gauge `{room}`: session slots this node leases for an outage (`on_store_error = "capped"`).
pub const ROOM_LEASE_SLOTS: &str = "rushgate_room_lease_slots";
/// Counter: shoppers admitted on a lease while the store was unreachable (`capped`).
pub const CAPPED_ADMISSIONS: &str = "rushgate_capped_admissions_total";

/// Bucket bounds (seconds) of every `_seconds` histogram: 0.5 ms to 10 s.
/// Gauge: upgraded connections (WebSocket and other tunnels) open through the proxy, label
/// `upstream`.
pub const PROXY_TUNNELS_OPEN: &str = "rushgate_proxy_tunnels_open";
/// Counter: upgrade requests through the proxy, labels `upstream` and `outcome` (`opened`,
/// `refused` at the tunnel cap, `declined` by the shop).
pub const PROXY_TUNNELS: &str = "rushgate_proxy_tunnels_total";
/// Gauge: event streams (`.../events`) open on this node.
pub const EVENT_STREAMS_OPEN: &str = "rushgate_event_streams_open";
/// Gauge: connections open now, label `listener` (`public` or `admin`).
pub const CONNECTIONS_OPEN: &str = "rushgate_connections_open";
/// Counter: connections closed at once because the listener was at its cap, label `listener`.
pub const CONNECTIONS_REFUSED: &str = "rushgate_connections_refused_total";
/// Counter: connections closed by a deadline, labels `listener` and `reason`
/// (`head_timeout`: no complete request head in time, TLS handshake included; `idle_timeout`:
/// no request on a kept-alive connection; `write_stalled`: the client stopped reading an
/// answer; `tls_handshake`: the handshake failed).
pub const CONNECTIONS_CLOSED: &str = "rushgate_connections_closed_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `endpoint` labels of [`LIMITER_REJECTIONS`], exported at 0 from the start.
const LIMITED_ENDPOINTS: [&str; 4] = ["join", "poll", "purchase", "coupon"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Metric handles registered once per label set and kept. Building a labelled key and looking
/// it up in the registry on every event was a measurable share of the poll, proxy and purchase
/// paths. Nothing is kept before [`install`], since handles made then would record nowhere.
pub struct Handles<K, H>(DashMap<K, H, foldhash::fast::RandomState>);

impl<K: Eq + std::hash::Hash, H> Handles<K, H> {
    /// An empty set.
    pub fn new() -> Self {
        Handles(DashMap::with_hasher(foldhash::fast::RandomState::default()))
    }

    /// Runs `record` on the handle of `key`, registered by `register` the first time (used in
    /// place: no handle is cloned per event).
    pub fn record(&self, key: K, register: impl FnOnce() -> H, record: impl FnOnce(&H)) {
        if let Some(h) = self.0.get(&key) {
            record(&h);
            return;
        }
        let h = register();
        record(&h);
        if HANDLE.get().is_some() {
            self.0.insert(key, h);
        }
    }
}

impl<K: Eq + std::hash::Hash, H> Default for Handles<K, H> {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a finished request and records its duration under `{route, status}`.
pub fn record_request(route: &'static str, status: u16, seconds: f64) {
    type RouteStatus = (&'static str, u16);
    static HANDLES: LazyLock<Handles<RouteStatus, (Counter, Histogram)>> =
        LazyLock::new(Handles::new);
    HANDLES.record(
        (route, status),
        || {
            let label = status.to_string();
            (
                metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => label.clone()),
                metrics::histogram!(HTTP_DURATION, "route" => route, "status" => label),
            )
        },
        |(counter, histogram)| {
            counter.increment(1);
            histogram.record(seconds);
        },
    );
}

/// The metrics of one proxy upstream: time to response headers per status and failures per
/// kind, labelled `upstream`. Cloning shares the kept handles.
#[derive(Clone)]
pub struct UpstreamMetrics {
    label: Arc<str>,
    durations: Arc<Handles<u16, Histogram>>,
}

impl UpstreamMetrics {
    /// Metrics labelled `upstream = label` (the upstream's `host:port`).
    pub fn new(label: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            label: label.into(),
            durations: Arc::new(Handles::new()),
        }
    }

    /// Records the time an upstream took to send response headers with `status`.
    pub fn record(&self, status: u16, seconds: f64) {
        self.durations.record(
            status,
            || {
                metrics::histogram!(
                    PROXY_UPSTREAM_DURATION,
                    "upstream" => self.label.to_string(),
                    "status" => status.to_string()
                )
            },
            |h| h.record(seconds),
        );
    }

    /// Counts a request the upstream did not answer (`connect`, `tls`, `timeout` or `other`).
    pub fn failed(&self, kind: &'static str) {
        metrics::counter!(PROXY_UPSTREAM_ERRORS, "upstream" => self.label.to_string(), "kind" => kind)
            .increment(1);
    }

    /// The open-tunnel gauge of this upstream (`+1` when a tunnel opens, `-1` when it closes).
    pub fn tunnels_open(&self) -> metrics::Gauge {
        metrics::gauge!(PROXY_TUNNELS_OPEN, "upstream" => self.label.to_string())
    }

    /// Counts an upgrade request: `opened`, `refused` (the upstream's tunnel cap was reached)
    /// or `declined` (the shop answered without switching protocols).
    pub fn tunnel(&self, outcome: &'static str) {
        metrics::counter!(PROXY_TUNNELS, "upstream" => self.label.to_string(), "outcome" => outcome)
            .increment(1);
    }
}

/// Installs the global recorder on first call, describes every metric, and returns its handle
/// (the same on every call, so several servers in one process, as in tests, share it).
/// Histograms render as Prometheus histograms (with `le` buckets), so quantiles aggregate
/// across nodes with `histogram_quantile`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                // Fails only for empty buckets, which the constant is not.
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Exported from the start, so "none yet" reads 0 rather than "no data".
            metrics::counter!(STORE_ERRORS).increment(0);
            metrics::gauge!(EVENT_STREAMS_OPEN).set(0.0);
            for listener in ["public", "admin"] {
                metrics::gauge!(CONNECTIONS_OPEN, "listener" => listener).set(0.0);
                metrics::counter!(CONNECTIONS_REFUSED, "listener" => listener).increment(0);
                for reason in ["head_timeout", "idle_timeout", "write_stalled", "tls_handshake"] {
                    metrics::counter!(CONNECTIONS_CLOSED, "listener" => listener, "reason" => reason)
                        .increment(0);
                }
            }
            for endpoint in LIMITED_ENDPOINTS {
                metrics::counter!(LIMITER_REJECTIONS, "endpoint" => endpoint).increment(0);
            }
            handle
        })
        .clone()
}

/// `# HELP` and units for every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BUILD_INFO, "rushgate build; value 1, label version");
    describe_gauge!(
        EVENT_STREAMS_OPEN,
        Unit::Count,
        "Event streams (server-sent events of a place) open on this node"
    );
    describe_gauge!(
        PROXY_TUNNELS_OPEN,
        Unit::Count,
        "WebSocket and other upgraded connections open through the proxy, per upstream"
    );
    describe_counter!(
        PROXY_TUNNELS,
        Unit::Count,
        "Upgrade requests through the proxy (outcome: opened, refused at the cap, declined by the shop)"
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        Unit::Count,
        "Connections open now, per listener"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed at once because the listener was at its cap"
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        Unit::Count,
        "Connections closed by a deadline (reason: head_timeout, idle_timeout, write_stalled, tls_handshake)"
    );
    describe_gauge!(
        ROOM_WAITING,
        Unit::Count,
        "Shoppers waiting in the room (this node's cached copy of the shared state)"
    );
    describe_gauge!(
        ROOM_ACTIVE,
        Unit::Count,
        "Admitted sessions alive now across all nodes"
    );
    describe_gauge!(
        ROOM_MAX_ACTIVE,
        Unit::Count,
        "Configured cap on admitted sessions (max_active)"
    );
    describe_counter!(
        ROOM_ADMITTED,
        Unit::Count,
        "Admissions ever (shared total: aggregate with max, not sum)"
    );
    describe_counter!(
        ROOM_JOINS,
        Unit::Count,
        "Places handed out ever (shared total: aggregate with max, not sum)"
    );
    describe_counter!(
        ROOM_EVICTIONS,
        Unit::Count,
        "Idle waiters and unclaimed sessions evicted ever (shared total)"
    );
    describe_counter!(
        ROOM_LEAVES,
        Unit::Count,
        "Places and sessions given up ever (shared total)"
    );
    describe_gauge!(
        ROOM_ADMISSION_RATE,
        "Measured admission rate per second (typical, feeds the ETA p50)"
    );
    describe_gauge!(
        ROOM_CONFIGURED_RATE,
        "Configured pacing per second (admit_per_minute / 60)"
    );
    describe_gauge!(
        ROOM_ETA_P50,
        Unit::Seconds,
        "ETA p50 of a shopper joining now; NaN while nothing is admitted"
    );
    describe_gauge!(
        ROOM_ETA_P90,
        Unit::Seconds,
        "ETA p90 of a shopper joining now; NaN while nothing is admitted"
    );
    describe_gauge!(
        ROOM_STATUS,
        "1 for the room's current status (open, paused, closed, draining), else 0"
    );
    describe_gauge!(
        ROOM_STATE_AGE,
        Unit::Seconds,
        "Age of this node's cached room state; grows while the store is unreachable"
    );
    describe_gauge!(
        ROOM_REVOCATIONS,
        Unit::Count,
        "Moved places and ended sessions whose tickets and passes this node refuses"
    );
    describe_gauge!(
        ROOM_STORE_MODE,
        "1 for the mode this node serves the room in (normal, capped, fail_closed, fail_open)"
    );
    describe_gauge!(
        ROOM_LEASE_SLOTS,
        Unit::Count,
        "Session slots this node leases for a store outage (capped mode)"
    );
    describe_counter!(
        CAPPED_ADMISSIONS,
        Unit::Count,
        "Shoppers admitted on a lease while the store was unreachable (capped mode)"
    );
    describe_gauge!(SALE_AVAILABLE, Unit::Count, "Units anyone can buy now");
    describe_gauge!(
        SALE_RESERVED,
        Unit::Count,
        "Units held by live reservations"
    );
    describe_gauge!(SALE_CONFIRMED, Unit::Count, "Units paid for");
    describe_gauge!(
        SALE_TOTAL,
        Unit::Count,
        "Units ever put on sale (initial stock plus additions minus removals)"
    );
    describe_counter!(
        PURCHASES,
        Unit::Count,
        "Purchase attempts answered by this node, by outcome"
    );
    describe_counter!(COUPONS_ISSUED, Unit::Count, "Coupons issued by this node");
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration until the response head, by route and status"
    );
    describe_counter!(STORE_COMMANDS, Unit::Count, "Store commands sent");
    describe_histogram!(STORE_LATENCY, Unit::Seconds, "Store script latency");
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Store commands that failed (unreachable, timeout, protocol)"
    );
    describe_histogram!(
        PROXY_UPSTREAM_DURATION,
        Unit::Seconds,
        "Time to the upstream (shop) response headers, by upstream and status"
    );
    describe_counter!(
        PROXY_UPSTREAM_ERRORS,
        Unit::Count,
        "Proxied requests that got no upstream response, by upstream and kind"
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        Unit::Count,
        "Webhook deliveries by event and outcome (delivered, gave_up)"
    );
    describe_counter!(
        LIMITER_REJECTIONS,
        Unit::Count,
        "Requests refused with 429 by a rate limit, by endpoint"
    );
    describe_counter!(
        POW_CHALLENGES,
        Unit::Count,
        "Proof-of-work challenges issued by this node"
    );
    describe_counter!(
        POW_SOLVED,
        Unit::Count,
        "Proof-of-work solutions accepted by this node (one place each)"
    );
    describe_counter!(
        POW_REFUSED,
        Unit::Count,
        "Proof-of-work solutions refused by this node, by reason"
    );
    describe_gauge!(
        POW_DIFFICULTY,
        "Proof-of-work difficulty in force on this node in leading zero bits (0: none asked)"
    );
}

/// Runs the exporter's upkeep (histogram buckets draining) every few seconds until shutdown.
pub async fn upkeep(handle: PrometheusHandle, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}
