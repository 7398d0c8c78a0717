//! Typed TOML configuration: defaults, environment overrides and validation.
//!
//! Loading goes file → TOML value → env overrides (`RUSHGATE_<SECTION>_<KEY>`, and
//! `RUSHGATE_ROOMS_<ID>_<KEY>` for a room) → typed [`Config`] → [`Config::validate`]. Every
//! problem names the field it is about (`rooms[1].admit_per_minute: must be greater than 0`),
//! and validation collects all of them before returning.
//!
//! A leaf layer: it imports nothing of the crate but [`crate::id`] and [`crate::i18n`] (the
//! languages a room may offer). One file per section, each
//! with its own rules; sections hand out values parsed once ([`ServerConfig::trusted_nets`],
//! [`Upstream`], [`Pattern`], [`WebhookConfig::events`]).
//!
//! - `server`: listeners, cookie policy, trusted proxies, the admin token.
//! - `store`: where state lives and the outage policy.
//! - `passes`: pass signing and the ticket secret.
//! - `identity`: shop-signed user tokens (who a shopper is).
//! - `rooms`: the waiting rooms; `proxy`: the value rules of a room's proxy fields (upstream
//!   URL, `protect`/`bypass` patterns, page-template placeholders).
//! - `sales`: sales, coupon campaigns and the shop's key; `groups`: rooms a shopper may wait
//!   in at once.
//! - `limits`, `webhooks`, `log`: rate limits, operator alerts, logging.
//! - `env`: environment overrides.

mod env;
mod groups;
mod identity;
mod limits;
mod log;
mod passes;
mod proxy;
mod rooms;
mod sales;
mod server;
mod store;
mod webhooks;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use env::{EnvSource, ProcessEnv};
pub use groups::{GroupConfig, MAX_ACTIVE_PER_SHOPPER};
pub use identity::{IdentityConfig, MIN_IDENTITY_SECRET_LEN};
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use passes::{PassAlgorithm, PassesConfig};
pub use proxy::{
    check_template, fill, read_template, Pattern, Upstream, UpstreamUrl, DEMO_UPSTREAM,
    PLACEHOLDERS,
};
pub use rooms::{check_message, PowMode, RoomConfig, RoomMode, MAX_MESSAGE_CHARS, MAX_POW_BITS};
pub use sales::{CouponConfig, SaleConfig, ShopConfig};
pub use server::{parse_net, AdminConfig, ListenerTls, SecureCookies, ServerConfig};
pub use store::{OnStoreError, RedisTarget, SentinelConfig, StoreConfig};
pub use webhooks::{WebhookConfig, WebhookEvent};

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
    /// Shop-signed shopper identity (user tokens).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// The waiting rooms.
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
    /// Stock sold behind a room.
    #[serde(default)]
    pub sales: Vec<SaleConfig>,
    /// First-come coupon campaigns.
    #[serde(default)]
    pub coupons: Vec<CouponConfig>,
    /// Rooms a shopper may wait in at once, with a cap on the sessions held at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupConfig>,
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

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// One thing wrong with a configuration. Displays as `field: message`, the line `check-config`
/// prints (`rooms[1].admit_per_minute: must be greater than 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path (`rooms[1].admit_per_minute`), or the environment variable it came from.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// A problem of the whole configuration rather than of one field (a reload refused because
    /// the server was started without a file, say). Displays as the message alone.
    pub fn general(message: impl Into<String>) -> Self {
        Self::new(String::new(), message)
    }

    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A problem serializes as its text (`field: message`), the form API answers list.
impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
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
    /// Fields with wrong types, unknown names or values that fail validation, every one.
    #[error("{}", join_problems(.0, "\n"))]
    Invalid(Vec<Problem>),
}

/// Problems as one text (each `field: message`), `separator` between them.
pub fn join_problems(problems: &[Problem], separator: &str) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join(separator)
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
        env::apply_env_overrides(&mut value, env).map_err(ConfigError::Invalid)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                ConfigError::Invalid(vec![Problem::new(
                    e.path().to_string(),
                    e.inner().to_string(),
                )])
            })?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks every rule of every section and returns all problems, in a fixed order (the
    /// order `check-config` prints).
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        // The admin token's rules depend on the admin listener, so they come with the server's.
        self.server.validate(&self.admin, &mut problems);
        for (i, hook) in self.webhooks.iter().enumerate() {
            hook.validate(i, &mut problems);
        }
        self.server.validate_trusted_proxies(&mut problems);
        self.store.validate(&mut problems);
        self.passes.validate(&mut problems);
        self.identity.validate(&mut problems);
        rooms::validate_rooms(&self.rooms, &mut problems);
        let rooms: HashSet<&str> = self.rooms.iter().map(|r| r.id.as_str()).collect();
        let sale_ids = sales::validate_sales(&self.sales, &rooms, &mut problems);
        sales::validate_coupons(&self.coupons, &rooms, &sale_ids, &mut problems);
        groups::validate_groups(&self.groups, &rooms, &mut problems);
        self.shop.validate(&mut problems);
        self.log.validate(&mut problems);
        problems
    }

    /// What is allowed but probably not meant for production, one sentence each (`serve` logs
    /// them, `check-config` prints them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.uses_default_ticket_secret() {
            out.push(
                "passes.ticket_secret is the shipped placeholder; set RUSHGATE_PASSES_TICKET_SECRET"
                    .to_string(),
            );
        }
        if !self.sales.is_empty() && self.uses_default_shop_key() {
            out.push(
                "shop.api_key is the shipped placeholder; set RUSHGATE_SHOP_API_KEY".to_string(),
            );
        }
        if !self.identity.enabled() && self.store.redis().is_some() {
            out.push(
                "no [identity] key: join trusts the `user` key as sent, so anyone who knows a shopper's \
                 user id can take that shopper's place; set identity.secret or identity.jwks_url"
                    .to_string(),
            );
        }
        out
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
        let text = include_str!("../../config/rushgate.toml");
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
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
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
    fn identity_keys_come_from_the_environment() {
        let config = parse(
            "",
            &[
                (
                    "RUSHGATE_IDENTITY_SECRET",
                    "a-secret-of-at-least-32-bytes-0123456789",
                ),
                ("RUSHGATE_IDENTITY_AUDIENCE", "rushgate"),
            ],
        )
        .unwrap();
        assert!(config.identity.enabled());
        assert_eq!(config.identity.audience.as_deref(), Some("rushgate"));
        let err = parse("", &[("RUSHGATE_IDENTITY_SECRET", "short")]).unwrap_err();
        assert!(err.to_string().contains("identity.secret"), "{err}");
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
    fn pow_settings_default_off_are_validated_and_overridable() {
        let config = parse("[[rooms]]\nid = \"drop\"\n", &[]).unwrap();
        assert_eq!(config.rooms[0].pow, PowMode::Off);
        assert_eq!(
            (config.rooms[0].pow_min_bits, config.rooms[0].pow_max_bits),
            (8, 22)
        );

        let text = "[[rooms]]\nid = \"a\"\npow = \"always\"\npow_min_bits = 0\npow_max_bits = 33\n\
                    [[rooms]]\nid = \"b\"\npow = \"adaptive\"\npow_min_bits = 20\npow_max_bits = 12\n";
        let err = parse(text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("rooms[0].pow_min_bits: must be between 1 and 32"),
            "{err}"
        );
        assert!(
            err.contains("rooms[0].pow_max_bits: must be between 1 and 32"),
            "{err}"
        );
        assert!(
            err.contains("rooms[1].pow_min_bits: must not be greater than pow_max_bits"),
            "{err}"
        );
        let err = parse("[[rooms]]\nid = \"a\"\npow = \"sometimes\"\n", &[]).unwrap_err();
        assert!(err.to_string().starts_with("rooms[0].pow:"), "{err}");

        let config = parse(
            "[[rooms]]\nid = \"summer-drop\"\n",
            &[
                ("RUSHGATE_ROOMS_SUMMER_DROP_POW", "adaptive"),
                ("RUSHGATE_ROOMS_SUMMER_DROP_POW_MIN_BITS", "10"),
                ("RUSHGATE_ROOMS_SUMMER_DROP_POW_MAX_BITS", "16"),
            ],
        )
        .unwrap();
        let room = &config.rooms[0];
        assert_eq!(
            (room.pow, room.pow_min_bits, room.pow_max_bits),
            (PowMode::Adaptive, 10, 16)
        );
        let err = parse(
            "[[rooms]]\nid = \"a\"\n",
            &[("RUSHGATE_ROOMS_A_POW_MAX_BITS", "lots")],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("RUSHGATE_ROOMS_A_POW_MAX_BITS"),
            "{err}"
        );
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
