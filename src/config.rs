//! Typed TOML configuration: defaults, environment overrides and validation.
//!
//! Loading goes file → TOML value → env overrides (`RUSHGATE_<SECTION>_<KEY>`, and
//! `RUSHGATE_ROOMS_<ID>_<KEY>` for a room) → typed [`Config`] → [`Config::validate`]. Every
//! problem names the field it is about (`rooms[1].admit_per_minute: must be greater than 0`),
//! and validation collects all of them before returning.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::is_valid_id;
use crate::pass::PassAlgorithm;

/// Prefix of every environment override.
const ENV_PREFIX: &str = "RUSHGATE";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and cookie policy.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where room, sale and coupon state lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Admission passes and queue tickets.
    #[serde(default)]
    pub passes: PassesConfig,
    /// The waiting rooms.
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
    /// Stock sold behind a room.
    #[serde(default)]
    pub sales: Vec<SaleConfig>,
    /// First-come coupon campaigns.
    #[serde(default)]
    pub coupons: Vec<CouponConfig>,
    /// How the shop backend authenticates to rushgate.
    #[serde(default)]
    pub shop: ShopConfig,
    /// Log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// The operator's admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Per-client rate limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Operator alerts POSTed to URLs.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL (`http://`; put a TLS-terminating relay in front for https receivers).
    pub url: String,
    /// Event types to send (see `webhooks::EVENTS`).
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `Rushgate-Signature` header (≥ 16 characters).
    pub secret: Secret,
}

/// `[limits]`: requests per minute and burst per client (ticket, pass, or IP); `0` per
/// minute turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Joins per client IP.
    pub join_per_minute: u32,
    /// Joins allowed at once.
    pub join_burst: u32,
    /// Position polls per ticket.
    pub poll_per_minute: u32,
    /// Polls allowed at once.
    pub poll_burst: u32,
    /// Purchase attempts per pass.
    pub purchase_per_minute: u32,
    /// Purchase attempts allowed at once.
    pub purchase_burst: u32,
    /// Coupon claims per pass or client IP.
    pub coupon_per_minute: u32,
    /// Coupon claims allowed at once.
    pub coupon_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            join_per_minute: 60,
            join_burst: 20,
            poll_per_minute: 120,
            poll_burst: 20,
            purchase_per_minute: 30,
            purchase_burst: 10,
            coupon_per_minute: 30,
            coupon_burst: 10,
        }
    }
}

impl LimitsConfig {
    /// Every limit off (load tests, the test suite).
    pub fn off() -> Self {
        Self {
            join_per_minute: 0,
            poll_per_minute: 0,
            purchase_per_minute: 0,
            coupon_per_minute: 0,
            ..Self::default()
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token of the admin API (`/admin/v1`). Empty: the admin API is open, which
    /// `serve` allows only when `server.admin_listen` is a loopback address.
    pub token: Secret,
}

impl AdminConfig {
    /// The token, when one is set.
    pub fn token(&self) -> Option<&str> {
        let t = self.token.0.as_str();
        (!t.is_empty()).then_some(t)
    }
}

/// One `[[sales]]` entry: stock sold to shoppers admitted through `room`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleConfig {
    /// Sale id: `[a-z0-9_-]{1,64}`.
    pub id: String,
    /// Buying needs a valid pass of this room; at most one sale per room.
    pub room: String,
    /// Units put on sale when the sale is first seen by the store (later changes: add-stock).
    pub stock: u64,
    /// Units per user key over the whole sale.
    #[serde(default = "defaults::per_user_limit")]
    pub per_user_limit: u32,
    /// Unpaid reservations return to stock after this.
    #[serde(default = "defaults::reservation_seconds")]
    pub reservation_seconds: u32,
    /// Admitted shoppers who have not bought yet, per available unit (stock-aware admission).
    #[serde(default = "defaults::admit_per_unit")]
    pub admit_per_unit: f64,
}

impl SaleConfig {
    /// A sale with default settings (env-override key discovery and tests).
    pub fn with_ids(id: &str, room: &str, stock: u64) -> Self {
        Self {
            id: id.to_string(),
            room: room.to_string(),
            stock,
            per_user_limit: defaults::per_user_limit(),
            reservation_seconds: defaults::reservation_seconds(),
            admit_per_unit: defaults::admit_per_unit(),
        }
    }
}

/// One `[[coupons]]` entry: a first-come coupon campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponConfig {
    /// Campaign id: `[a-z0-9_-]{1,64}`.
    pub id: String,
    /// Coupons in total; never more are issued.
    pub limit: u64,
    /// When set, claiming needs a pass of this room (the user is the pass subject); otherwise
    /// the body names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one JSON object per line, for log collectors).
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, or per target such as
    /// `info,rushgate::request=warn` (drops the per-request lines). `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[shop]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// Bearer key the shop backend uses to confirm and release reservations.
    pub api_key: Secret,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            api_key: Secret("change-me-shop-key".into()),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: shopper traffic and the JSON API.
    pub listen: String,
    /// Admin listener: probes and metrics. Keep it on loopback or a private network.
    pub admin_listen: String,
    /// Whether cookies carry `Secure`: `auto` sets it when the request came over TLS or with
    /// `X-Forwarded-Proto: https`.
    pub secure_cookies: SecureCookies,
    /// URL prefix of the JSON API.
    pub api_prefix: String,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace_seconds: u64,
    /// Maximum simultaneous connections per listener; further accepts wait.
    pub max_connections: usize,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed for the client IP.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            secure_cookies: SecureCookies::Auto,
            api_prefix: "/_rushgate".into(),
            shutdown_grace_seconds: 10,
            max_connections: 50_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Cookie `Secure` attribute policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookies {
    /// Secure when the request came over TLS or `X-Forwarded-Proto: https`.
    Auto,
    /// Always Secure.
    True,
    /// Never Secure.
    False,
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://` or `rediss://` URL; absent means the embedded in-process store (one node only).
    pub redis_url: Option<String>,
    /// What requests that need the store get while it is unreachable.
    pub on_store_error: OnStoreError,
    /// Per-command timeout; a slower store counts as unavailable.
    pub command_timeout_ms: u64,
    /// How often each node refreshes its cached room state (and ticks the pacer).
    pub refresh_ms: u64,
    /// Redis connections per node.
    pub pool_size: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_store_error: OnStoreError::FailClosed,
            command_timeout_ms: 1000,
            refresh_ms: 250,
            pool_size: 4,
        }
    }
}

/// Store outage policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Refuse work that needs the store with 503 + `Retry-After`.
    FailClosed,
    /// Let shoppers through (issue passes without queueing) while the store is down.
    FailOpen,
}

/// `[passes]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassesConfig {
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`: the shop.
    pub audience: String,
    /// Pass signature algorithm.
    pub algorithm: PassAlgorithm,
    /// PKCS#8 PEM private key file (relative paths are relative to the working directory).
    pub signing_key_file: PathBuf,
    /// Generate `signing_key_file` when it is missing (development only; warns).
    pub generate_missing_key: bool,
    /// HMAC secret of queue tickets; every node of one deployment needs the same one.
    pub ticket_secret: Secret,
}

impl Default for PassesConfig {
    fn default() -> Self {
        Self {
            issuer: "rushgate".into(),
            audience: "shop".into(),
            algorithm: PassAlgorithm::EdDSA,
            signing_key_file: PathBuf::from("config/dev-signing-key.pem"),
            generate_missing_key: true,
            ticket_secret: Secret("change-me".into()),
        }
    }
}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// One `[[rooms]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// Room id: `[a-z0-9_-]{1,64}`; appears in URLs, cookie names and store keys.
    pub id: String,
    /// Pacing: admissions per minute across all nodes.
    #[serde(default = "defaults::admit_per_minute")]
    pub admit_per_minute: u32,
    /// Admitted sessions alive at once across all nodes.
    #[serde(default = "defaults::max_active")]
    pub max_active: u32,
    /// Pass lifetime.
    #[serde(default = "defaults::session_seconds")]
    pub session_seconds: u32,
    /// A waiter who stops polling this long loses the place.
    #[serde(default = "defaults::idle_timeout_seconds")]
    pub idle_timeout_seconds: u32,
    /// Message shown to waiters (operator note).
    #[serde(default)]
    pub message: String,
    /// The shop behind this room, for the reverse proxy: `http://host:port`, or `builtin:demo`
    /// for the small demo shop served by rushgate itself. Absent: no proxying (API and gate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Paths that need a pass of this room: prefixes (`/products/drop` covers `/products/drop/…`)
    /// and simple globs where `*` matches any characters (`/checkout/*`).
    #[serde(default)]
    pub protect: Vec<String>,
    /// Paths forwarded without queueing even when `protect` matches them (`*.css`, `/health`).
    #[serde(default)]
    pub bypass: Vec<String>,
    /// The shop's own waiting-page template (HTML with `{{placeholders}}`, see README); absent
    /// means the built-in page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_template: Option<PathBuf>,
    /// How arrivals are let in while the room is open (default `safety_net`).
    #[serde(default)]
    pub mode: RoomMode,
    /// Scheduled drop: when the room opens (RFC 3339). Before it (and before the pre-queue)
    /// joins are answered `closed` with the opening time.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub opens_at: Option<time::OffsetDateTime>,
    /// Scheduled drop: when the pre-queue opens (RFC 3339, before `opens_at`). Arrivals from
    /// then until `opens_at` wait on a countdown and are shuffled into a verifiable random
    /// order at opening.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub prequeue_opens_at: Option<time::OffsetDateTime>,
    /// Scheduled drop: from this time (RFC 3339) no new places are made; places already held
    /// are still served.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub closes_at: Option<time::OffsetDateTime>,
}

/// How a room lets arrivals in while it is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Everyone queues, even when the shop has room: no instant admission.
    Queue,
    /// Admit at once while under `max_active` and nobody waits; queue only when over.
    #[default]
    SafetyNet,
    /// Admit everyone at once: no queue, no store call (the waiting room is switched off).
    Passthrough,
    /// No joins and no admissions.
    Closed,
}

impl RoomMode {
    /// The config / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Queue => "queue",
            RoomMode::SafetyNet => "safety_net",
            RoomMode::Passthrough => "passthrough",
            RoomMode::Closed => "closed",
        }
    }
}

mod defaults {
    pub fn admit_per_minute() -> u32 {
        600
    }
    pub fn max_active() -> u32 {
        100
    }
    pub fn session_seconds() -> u32 {
        600
    }
    pub fn idle_timeout_seconds() -> u32 {
        60
    }
    pub fn per_user_limit() -> u32 {
        1
    }
    pub fn reservation_seconds() -> u32 {
        600
    }
    pub fn admit_per_unit() -> f64 {
        1.0
    }
}

impl RoomConfig {
    /// A room with every optional key set, so env overrides can name keys a file left out
    /// (`RUSHGATE_ROOMS_DROP_OPENS_AT=2026-11-24T12:00:00Z`).
    fn env_template() -> Self {
        Self {
            upstream: Some(String::new()),
            page_template: Some(PathBuf::new()),
            opens_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            prequeue_opens_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            closes_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            ..Self::with_id("x")
        }
    }

    /// A room with default settings (used for env-override key discovery and tests).
    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.to_string(),
            admit_per_minute: defaults::admit_per_minute(),
            max_active: defaults::max_active(),
            session_seconds: defaults::session_seconds(),
            idle_timeout_seconds: defaults::idle_timeout_seconds(),
            message: String::new(),
            upstream: None,
            protect: Vec::new(),
            bypass: Vec::new(),
            page_template: None,
            mode: RoomMode::default(),
            opens_at: None,
            prequeue_opens_at: None,
            closes_at: None,
        }
    }
}

/// Why a configuration could not be used. Display lists every problem, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// Fields with wrong types, unknown names or values that fail validation.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Where environment overrides come from; tests pass a map instead of touching the process env.
pub trait EnvSource {
    /// The value of variable `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

impl Config {
    /// Reads, overrides from `env`, parses and validates `path`.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path, env)
    }

    /// Parses and validates config text; `origin` only names the source in messages.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        env: &dyn EnvSource,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_path_buf(),
                    message: e.to_string().trim().to_string(),
                })?;
        apply_env_overrides(&mut value, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| ConfigError::Invalid(vec![format!("{}: {}", e.path(), e.inner())]))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks every rule and returns all problems, each prefixed with its field path.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, msg: &str| problems.push(format!("{field}: {msg}"));

        if self.server.listen.parse::<SocketAddr>().is_err() {
            bad("server.listen", "must be an address like 127.0.0.1:8080");
        }
        if self.server.admin_listen.parse::<SocketAddr>().is_err() {
            bad(
                "server.admin_listen",
                "must be an address like 127.0.0.1:9090",
            );
        }
        // Port 0 (an ephemeral port for each) is fine twice.
        if self.server.listen == self.server.admin_listen && !self.server.listen.ends_with(":0") {
            bad("server.admin_listen", "must differ from server.listen");
        }
        if let Ok(addr) = self.server.admin_listen.parse::<SocketAddr>() {
            if !addr.ip().is_loopback() && self.admin.token().is_none() {
                bad(
                    "admin.token",
                    "must be set when server.admin_listen is not a loopback address (env RUSHGATE_ADMIN_TOKEN)",
                );
            }
        }
        if let Some(t) = self.admin.token() {
            if t.len() < 16 {
                bad("admin.token", "must be at least 16 characters");
            }
        }
        let prefix = &self.server.api_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            bad(
                "server.api_prefix",
                "must start with '/' and not end with '/'",
            );
        }
        if self.server.max_connections == 0 {
            bad("server.max_connections", "must be greater than 0");
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !w.url.starts_with("http://") || w.url.parse::<http::Uri>().is_err() {
                bad(&format!("webhooks[{i}].url"), "must be an http:// URL");
            }
            if w.events.is_empty() {
                bad(
                    &format!("webhooks[{i}].events"),
                    "must name at least one event",
                );
            }
            for e in &w.events {
                if !crate::webhooks::EVENTS.contains(&e.as_str()) {
                    bad(
                        &format!("webhooks[{i}].events"),
                        "unknown event; use room.prequeue_opened, room.opened, room.paused, sale.sold_out, sale.restocked or coupon.exhausted",
                    );
                }
            }
            if w.secret.0.len() < 16 {
                bad(
                    &format!("webhooks[{i}].secret"),
                    "must be at least 16 characters",
                );
            }
        }
        for (i, p) in self.server.trusted_proxies.iter().enumerate() {
            if crate::http::limits::parse_net(p).is_none() {
                bad(
                    &format!("server.trusted_proxies[{i}]"),
                    "must be an IP address or CIDR block like 10.0.0.0/8",
                );
            }
        }
        if let Some(url) = &self.store.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                bad("store.redis_url", "must start with redis:// or rediss://");
            }
        }
        if self.store.command_timeout_ms == 0 {
            bad("store.command_timeout_ms", "must be greater than 0");
        }
        if !(10..=5000).contains(&self.store.refresh_ms) {
            bad("store.refresh_ms", "must be between 10 and 5000");
        }
        if self.store.pool_size == 0 || self.store.pool_size > 64 {
            bad("store.pool_size", "must be between 1 and 64");
        }
        if self.passes.issuer.is_empty() {
            bad("passes.issuer", "must not be empty");
        }
        if self.passes.audience.is_empty() {
            bad("passes.audience", "must not be empty");
        }
        if self.passes.ticket_secret.0.len() < 8 {
            bad("passes.ticket_secret", "must be at least 8 characters");
        }
        let mut seen = HashSet::new();
        for (i, room) in self.rooms.iter().enumerate() {
            let mut field = |name: &str, msg: &str| bad(&format!("rooms[{i}].{name}"), msg);
            if !is_valid_id(&room.id) {
                field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
            } else if !seen.insert(room.id.as_str()) {
                field("id", "is used by another room");
            }
            if room.admit_per_minute == 0 {
                field("admit_per_minute", "must be greater than 0");
            }
            if room.max_active == 0 {
                field("max_active", "must be greater than 0");
            }
            if room.session_seconds == 0 {
                field("session_seconds", "must be greater than 0");
            }
            if room.idle_timeout_seconds < 2 {
                field("idle_timeout_seconds", "must be at least 2");
            }
            if let Some(pre) = room.prequeue_opens_at {
                match room.opens_at {
                    None => field("prequeue_opens_at", "needs opens_at"),
                    Some(opens) if pre >= opens => {
                        field("prequeue_opens_at", "must be before opens_at")
                    }
                    Some(_) => {}
                }
                if matches!(room.mode, RoomMode::Passthrough | RoomMode::Closed) {
                    field(
                        "prequeue_opens_at",
                        "needs mode queue or safety_net (a pre-queue queues)",
                    );
                }
            }
            if let Some(closes) = room.closes_at {
                let start = room.opens_at.or(room.prequeue_opens_at);
                if start.is_some_and(|start| closes <= start) {
                    field("closes_at", "must be after opens_at");
                }
            }
            for (name, problem) in crate::proxy::check_room(room) {
                field(&name, &problem);
            }
        }
        let rooms: HashSet<&str> = self.rooms.iter().map(|r| r.id.as_str()).collect();
        let mut sale_ids = HashSet::new();
        let mut sale_rooms = HashSet::new();
        for (i, sale) in self.sales.iter().enumerate() {
            let mut field = |name: &str, msg: &str| bad(&format!("sales[{i}].{name}"), msg);
            if !is_valid_id(&sale.id) {
                field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
            } else if !sale_ids.insert(sale.id.as_str()) {
                field("id", "is used by another sale");
            }
            if !rooms.contains(sale.room.as_str()) {
                field("room", "must be the id of a configured room");
            } else if !sale_rooms.insert(sale.room.as_str()) {
                field("room", "already has a sale (one sale per room)");
            }
            if sale.per_user_limit == 0 {
                field("per_user_limit", "must be greater than 0");
            }
            if sale.reservation_seconds == 0 {
                field("reservation_seconds", "must be greater than 0");
            }
            if !(sale.admit_per_unit.is_finite() && sale.admit_per_unit > 0.0) {
                field("admit_per_unit", "must be a number greater than 0");
            }
            if sale.stock > i64::MAX as u64 {
                field("stock", "is too large");
            }
        }
        let mut coupon_ids = HashSet::new();
        for (i, coupon) in self.coupons.iter().enumerate() {
            let mut field = |name: &str, msg: &str| bad(&format!("coupons[{i}].{name}"), msg);
            if !is_valid_id(&coupon.id) {
                field("id", "must be 1-64 characters of a-z, 0-9, '-' or '_'");
            } else if !coupon_ids.insert(coupon.id.as_str()) {
                field("id", "is used by another coupon campaign");
            } else if sale_ids.contains(coupon.id.as_str()) {
                field("id", "is used by a sale (their keys would share a slot)");
            }
            if coupon.limit == 0 {
                field("limit", "must be greater than 0");
            }
            if let Some(room) = &coupon.room {
                if !rooms.contains(room.as_str()) {
                    field("room", "must be the id of a configured room");
                }
            }
        }
        if self.shop.api_key.0.len() < 8 {
            bad("shop.api_key", "must be at least 8 characters");
        }
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.log.level)
            .is_err()
        {
            bad(
                "log.level",
                "must be a tracing filter such as info or warn,rushgate=debug",
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Whether the shop API key is still the shipped placeholder.
    pub fn uses_default_shop_key(&self) -> bool {
        self.shop.api_key == ShopConfig::default().api_key
    }

    /// Whether the ticket secret is still the shipped placeholder.
    pub fn uses_default_ticket_secret(&self) -> bool {
        self.passes.ticket_secret == PassesConfig::default().ticket_secret
    }
}

/// Applies `RUSHGATE_<SECTION>_<KEY>` to every scalar of the sections (including defaults that the
/// file left out) and `RUSHGATE_<ROOMS|SALES|COUPONS>_<ID>_<KEY>` to every room, sale and coupon
/// campaign (id upper-cased, `-` as `_`).
fn apply_env_overrides(table: &mut toml::Table, env: &dyn EnvSource) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let defaults = match toml::Table::try_from(Config::default()) {
        Ok(t) => t,
        Err(e) => return Err(ConfigError::Invalid(vec![format!("defaults: {e}")])),
    };
    for (section, default_value) in &defaults {
        let toml::Value::Table(default_section) = default_value else {
            continue;
        };
        let target = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(target) = target else {
            continue; // a type error that deserialization reports with its path
        };
        let mut keys: Vec<String> = default_section.keys().cloned().collect();
        // Optional keys (redis_url) serialize to nothing; they can still be set from env.
        if section == "store" {
            keys.push("redis_url".into());
        }
        for key in keys {
            let var = format!(
                "{ENV_PREFIX}_{}_{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
            if let Some(raw) = env.get(&var) {
                let like = target.get(&key).or_else(|| default_section.get(&key));
                match env_value(&raw, like) {
                    Ok(v) => {
                        target.insert(key, v);
                    }
                    Err(msg) => problems.push(format!("{var}: {msg}")),
                }
            }
        }
    }
    let arrays = [
        ("rooms", toml::Table::try_from(RoomConfig::env_template())),
        (
            "sales",
            toml::Table::try_from(SaleConfig::with_ids("x", "x", 0)),
        ),
        (
            "coupons",
            toml::Table::try_from(CouponConfig {
                id: "x".into(),
                limit: 1,
                room: Some("x".into()),
            }),
        ),
    ];
    for (section, item_keys) in arrays {
        let item_keys =
            item_keys.map_err(|e| ConfigError::Invalid(vec![format!("defaults: {e}")]))?;
        let Some(toml::Value::Array(items)) = table.get_mut(section) else {
            continue;
        };
        for item in items.iter_mut() {
            let toml::Value::Table(item) = item else {
                continue;
            };
            let Some(id) = item.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
                continue;
            };
            let env_id = id.to_uppercase().replace('-', "_");
            for (key, default) in &item_keys {
                if key == "id" {
                    continue;
                }
                let var = format!(
                    "{ENV_PREFIX}_{}_{env_id}_{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                if let Some(raw) = env.get(&var) {
                    let like = item.get(key).unwrap_or(default).clone();
                    match env_value(&raw, Some(&like)) {
                        Ok(v) => {
                            item.insert(key.clone(), v);
                        }
                        Err(msg) => problems.push(format!("{var}: {msg}")),
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Converts an env string into a TOML value of the same type as `like`.
fn env_value(raw: &str, like: Option<&toml::Value>) -> Result<toml::Value, String> {
    match like {
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got `{raw}`")),
        Some(toml::Value::Float(_)) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, got `{raw}`")),
        Some(toml::Value::Boolean(_)) => match raw.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_str(text, Path::new("test.toml"), &env)
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/rushgate.toml");
        let config = parse(text, &[]).expect("shipped config parses");
        assert!(
            config.store.redis_url.is_none(),
            "shipped config must use the embedded store"
        );
        assert!(!config.rooms.is_empty());
    }

    #[test]
    fn names_the_field_and_collects_every_problem() {
        let text = r#"
            [[rooms]]
            id = "a"
            [[rooms]]
            id = "b"
            admit_per_minute = 0
            max_active = 0
        "#;
        let Err(ConfigError::Invalid(problems)) = parse(text, &[]) else {
            panic!("expected invalid");
        };
        assert!(problems.contains(&"rooms[1].admit_per_minute: must be greater than 0".into()));
        assert!(problems.contains(&"rooms[1].max_active: must be greater than 0".into()));
    }

    #[test]
    fn type_errors_and_unknown_fields_name_the_path() {
        let err = parse("[[rooms]]\nid = \"a\"\nmax_active = \"many\"\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("rooms[0].max_active:"), "{err}");
        let err = parse("[server]\nlisten_on = \"x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("listen_on"), "{err}");
        let err = parse("[server\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
    }

    #[test]
    fn env_overrides_scalars_sections_and_rooms() {
        let text = "[[rooms]]\nid = \"summer-drop\"\n";
        let config = parse(
            text,
            &[
                ("RUSHGATE_PASSES_TICKET_SECRET", "from-the-environment"),
                ("RUSHGATE_STORE_REDIS_URL", "redis://10.0.0.1:6379"),
                ("RUSHGATE_SERVER_LISTEN", "0.0.0.0:80"),
                ("RUSHGATE_ROOMS_SUMMER_DROP_ADMIT_PER_MINUTE", "1200"),
            ],
        )
        .unwrap();
        assert_eq!(config.passes.ticket_secret.0, "from-the-environment");
        assert_eq!(
            config.store.redis_url.as_deref(),
            Some("redis://10.0.0.1:6379")
        );
        assert_eq!(config.server.listen, "0.0.0.0:80");
        assert_eq!(config.rooms[0].admit_per_minute, 1200);

        let err = parse(text, &[("RUSHGATE_STORE_REFRESH_MS", "soon")]).unwrap_err();
        assert!(
            err.to_string().contains("RUSHGATE_STORE_REFRESH_MS"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_reach_optional_room_keys_the_file_left_out() {
        let text = "[[rooms]]\nid = \"drop\"\n";
        let config = parse(
            text,
            &[
                ("RUSHGATE_ROOMS_DROP_OPENS_AT", "2030-01-01T12:00:00Z"),
                ("RUSHGATE_ROOMS_DROP_UPSTREAM", "http://127.0.0.1:3000"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.rooms[0].opens_at.map(|t| t.unix_timestamp()),
            Some(1_893_499_200)
        );
        assert_eq!(
            config.rooms[0].upstream.as_deref(),
            Some("http://127.0.0.1:3000")
        );
        let err = parse(text, &[("RUSHGATE_ROOMS_DROP_OPENS_AT", "tomorrow")]).unwrap_err();
        assert!(err.to_string().contains("opens_at"), "{err}");
    }

    #[test]
    fn duplicate_and_malformed_room_ids_are_rejected() {
        let text = "[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"a\"\n[[rooms]]\nid = \"Bad Id\"\n";
        let err = parse(text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("rooms[1].id: is used by another room"),
            "{err}"
        );
        assert!(err.contains("rooms[2].id: must be"), "{err}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "[REDACTED]");
    }
}
