//! `[[rooms]]`: the waiting rooms, their pacing, schedule, proof-of-work and proxy fields,
//! [`RoomMode`] and [`PowMode`].
//! Room ids follow the one id rule of [`crate::id`]; the proxy fields' value rules live in
//! `config/proxy.rs`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{proxy, Problem};
use crate::id::is_valid_id;

/// Longest message to waiters, in characters (one language).
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// A message to waiters is at most [`MAX_MESSAGE_CHARS`] characters with no control characters
/// but line breaks and tabs; the error says what is wrong.
pub fn check_message(text: &str) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(format!(
            "is {chars} characters long; at most {MAX_MESSAGE_CHARS}"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
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
    /// Message shown to waiters (operator note), in any language the room offers that
    /// `messages` does not name. An operator may replace it live (`POST
    /// /admin/v1/rooms/{room}/message`).
    #[serde(default)]
    pub message: String,
    /// The message by language code (`messages = { ko = "...", ja = "..." }`), each one of
    /// `languages`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub messages: BTreeMap<String, String>,
    /// Languages the built-in waiting page and the room's messages are offered in, chosen per
    /// request by `Accept-Language`: any of en, ko, ja, zh (simplified Chinese), es, de, fr.
    /// Default: all of them.
    #[serde(default = "defaults::languages")]
    pub languages: Vec<String>,
    /// The language of a request whose `Accept-Language` names none of `languages`; one of them.
    #[serde(default = "defaults::default_language")]
    pub default_language: String,
    /// The shop behind this room, for the reverse proxy: `http://host:port`,
    /// `https://host:port` (certificate verified, SNI from the host), or `builtin:demo` for the
    /// small demo shop served by rushgate itself. Absent: no proxying (API and gate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Most WebSocket (upgraded) connections open at once through this room's upstream.
    #[serde(default = "defaults::max_tunnels")]
    pub max_tunnels: usize,
    /// A WebSocket (upgraded) connection through this room's upstream on which no byte moves
    /// either way for this long is closed (a peer that vanished without closing).
    #[serde(default = "defaults::tunnel_idle_seconds")]
    pub tunnel_idle_seconds: u64,
    /// PEM file of the certificate authorities that sign an `https://` upstream's certificate
    /// (a private CA); absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Paths that need a pass of this room: prefixes (`/products/drop` covers `/products/drop/…`)
    /// and simple globs where `*` matches any characters (`/checkout/*`).
    #[serde(default)]
    pub protect: Vec<String>,
    /// Paths forwarded without queueing even when `protect` matches them (`*.css`, `/health`).
    #[serde(default)]
    pub bypass: Vec<String>,
    /// Match `protect` and `bypass` without regard to case (`/PRODUCTS/x` is `/products/x`), as
    /// most shop frameworks route. Default true; set false for a shop whose paths differ by case.
    #[serde(default = "defaults::yes")]
    pub case_insensitive: bool,
    /// Accept `;` path parameters (`/item;jsessionid=…`) in proxied paths; otherwise they are
    /// refused with 400, because some servers strip them and would serve another path than the
    /// rules judged.
    #[serde(default)]
    pub allow_path_parameters: bool,
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
    /// Whether a join that makes a new place must carry a proof of work (default `off`).
    #[serde(default)]
    pub pow: PowMode,
    /// The least work asked, in leading zero bits of the solution's SHA-256 (1–32, default 8:
    /// about 256 hashes, a few milliseconds in a browser).
    #[serde(default = "defaults::pow_min_bits")]
    pub pow_min_bits: u8,
    /// The most work ever asked, however high the pressure (1–32, at least `pow_min_bits`;
    /// default 22: about four million hashes, some seconds in a browser).
    #[serde(default = "defaults::pow_max_bits")]
    pub pow_max_bits: u8,
}

/// When a join that makes a new place must first solve a proof-of-work challenge. Shoppers who
/// already hold a place (a valid ticket) and polls are never asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowMode {
    /// Never.
    #[default]
    Off,
    /// Only under pressure: joins per second above the admission rate, or many joins from one
    /// client address; the work then grows with the pressure.
    Adaptive,
    /// Every new place, at least `pow_min_bits`, more under pressure.
    Always,
}

impl PowMode {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            PowMode::Off => "off",
            PowMode::Adaptive => "adaptive",
            PowMode::Always => "always",
        }
    }
}

/// How a room lets arrivals in while it is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomMode {
    /// Everyone queues, even when the shop has room: no instant admission.
    Queue,
    /// Admit at once while under `max_active`, nobody waits and the admission rate allows it
    /// (a burst of one second's admissions at most); queue only beyond.
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
    pub fn yes() -> bool {
        true
    }
    pub fn languages() -> Vec<String> {
        crate::i18n::LANGUAGES
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
    pub fn default_language() -> String {
        crate::i18n::DEFAULT_LANGUAGE.to_string()
    }
    pub fn admit_per_minute() -> u32 {
        600
    }
    pub fn max_active() -> u32 {
        100
    }
    pub fn session_seconds() -> u32 {
        600
    }
    pub fn max_tunnels() -> usize {
        1_000
    }
    pub fn tunnel_idle_seconds() -> u64 {
        300
    }
    pub fn idle_timeout_seconds() -> u32 {
        60
    }
    pub fn pow_min_bits() -> u8 {
        8
    }
    pub fn pow_max_bits() -> u8 {
        22
    }
}

/// Most leading zero bits a challenge may ask: 2^32 hashes is minutes of a fast machine's
/// time, already far past what a shopper can be asked to wait.
pub const MAX_POW_BITS: u8 = 32;

impl RoomConfig {
    /// A room with every optional key set, so env overrides can name keys a file left out
    /// (`RUSHGATE_ROOMS_DROP_OPENS_AT=2026-11-24T12:00:00Z`).
    pub(super) fn env_template() -> Self {
        Self {
            upstream: Some(String::new()),
            upstream_ca_file: Some(PathBuf::new()),
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
            messages: BTreeMap::new(),
            languages: defaults::languages(),
            default_language: defaults::default_language(),
            upstream: None,
            upstream_ca_file: None,
            max_tunnels: defaults::max_tunnels(),
            tunnel_idle_seconds: defaults::tunnel_idle_seconds(),
            protect: Vec::new(),
            bypass: Vec::new(),
            case_insensitive: true,
            allow_path_parameters: false,
            page_template: None,
            mode: RoomMode::default(),
            opens_at: None,
            prequeue_opens_at: None,
            closes_at: None,
            pow: PowMode::default(),
            pow_min_bits: defaults::pow_min_bits(),
            pow_max_bits: defaults::pow_max_bits(),
        }
    }

    /// The language rules: known, distinct languages; a default among them; a message per
    /// language only for an offered one; every message within [`MAX_MESSAGE_CHARS`].
    fn validate_languages(&self, field: &mut impl FnMut(&str, &str)) {
        let known = crate::i18n::LANGUAGES.join(", ");
        if self.languages.is_empty() {
            field("languages", &format!("must name at least one of {known}"));
        }
        let mut seen = HashSet::new();
        for lang in &self.languages {
            if !crate::i18n::is_supported(lang) {
                field(
                    "languages",
                    &format!("{lang:?} is not a language rushgate ships (one of {known})"),
                );
            } else if !seen.insert(lang) {
                field("languages", &format!("names {lang:?} twice"));
            }
        }
        if !self.languages.is_empty() && !self.languages.contains(&self.default_language) {
            field(
                "default_language",
                &format!(
                    "{:?} must be one of languages ({})",
                    self.default_language,
                    self.languages.join(", ")
                ),
            );
        }
        if let Err(problem) = check_message(&self.message) {
            field("message", &problem);
        }
        for (lang, text) in &self.messages {
            if !self.languages.contains(lang) {
                field(
                    &format!("messages.{lang}"),
                    "is not one of the room's languages",
                );
            }
            if let Err(problem) = check_message(text) {
                field(&format!("messages.{lang}"), &problem);
            }
        }
    }

    /// Pacing, schedule and proxy-field rules of the room at `index` (its id is checked by
    /// [`validate_rooms`], which sees every room).
    pub(super) fn validate(&self, index: usize, problems: &mut Vec<Problem>) {
        let mut field = |name: &str, msg: &str| {
            problems.push(Problem::new(format!("rooms[{index}].{name}"), msg))
        };
        if self.admit_per_minute == 0 {
            field("admit_per_minute", "must be greater than 0");
        }
        if self.max_active == 0 {
            field("max_active", "must be greater than 0");
        }
        if self.max_tunnels > 100_000 {
            field("max_tunnels", "must be at most 100000");
        }
        if self.tunnel_idle_seconds == 0 || self.tunnel_idle_seconds > 86_400 {
            field("tunnel_idle_seconds", "must be between 1 and 86400");
        }
        if self.session_seconds == 0 {
            field("session_seconds", "must be greater than 0");
        }
        self.validate_languages(&mut field);
        if self.idle_timeout_seconds < 2 {
            field("idle_timeout_seconds", "must be at least 2");
        }
        if let Some(pre) = self.prequeue_opens_at {
            match self.opens_at {
                None => field("prequeue_opens_at", "needs opens_at"),
                Some(opens) if pre >= opens => {
                    field("prequeue_opens_at", "must be before opens_at")
                }
                Some(_) => {}
            }
            if matches!(self.mode, RoomMode::Passthrough | RoomMode::Closed) {
                field(
                    "prequeue_opens_at",
                    "needs mode queue or safety_net (a pre-queue queues)",
                );
            }
        }
        if let Some(closes) = self.closes_at {
            let start = self.opens_at.or(self.prequeue_opens_at);
            if start.is_some_and(|start| closes <= start) {
                field("closes_at", "must be after opens_at");
            }
        }
        for (name, bits) in [
            ("pow_min_bits", self.pow_min_bits),
            ("pow_max_bits", self.pow_max_bits),
        ] {
            if !(1..=MAX_POW_BITS).contains(&bits) {
                field(name, "must be between 1 and 32");
            }
        }
        if self.pow_min_bits > self.pow_max_bits {
            field("pow_min_bits", "must not be greater than pow_max_bits");
        }
        for (name, problem) in proxy::check_room(self) {
            field(&name, &problem);
        }
    }
}

/// Every room's rules, room by room: first its id (the id rule, then unique among rooms), then
/// [`RoomConfig::validate`].
pub(super) fn validate_rooms(rooms: &[RoomConfig], problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, room) in rooms.iter().enumerate() {
        if !is_valid_id(&room.id) {
            problems.push(Problem::new(
                format!("rooms[{i}].id"),
                "must be 1-64 characters of a-z, 0-9, '-' or '_'",
            ));
        } else if !seen.insert(room.id.as_str()) {
            problems.push(Problem::new(
                format!("rooms[{i}].id"),
                "is used by another room",
            ));
        }
        room.validate(i, problems);
    }
}
