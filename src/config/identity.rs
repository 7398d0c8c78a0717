//! `[identity]`: how rushgate learns who a shopper is. A shop that vouches for its shoppers
//! signs a short user token (a JWT whose `sub` is the shop's user id), with a shared HS256
//! secret or its own key set (JWKS); rushgate then joins the shopper as that `sub` and refuses
//! a bare user key. Without a key, the caller's `user` key is trusted as sent.

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

/// Shortest accepted HS256 secret: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_IDENTITY_SECRET_LEN: usize = 32;

/// `[identity]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Shared HS256 secret the shop signs user tokens with.
    pub secret: Option<Secret>,
    /// The shop's key set (RS256 / ES256 / EdDSA keys by `kid`), fetched at start, cached,
    /// refreshed every `jwks_refresh_secs` and when a token names an unknown `kid`.
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again.
    pub jwks_refresh_secs: u64,
    /// Required `iss` of user tokens, when set.
    pub issuer: Option<String>,
    /// Required `aud` of user tokens, when set.
    pub audience: Option<String>,
    /// Name of a shop cookie that carries the same user token, so a browser that reaches a
    /// protected page through the proxy joins as itself.
    pub cookie: Option<String>,
    /// Clock skew allowed on `exp` / `nbf`, seconds.
    pub leeway_secs: u64,
    /// Refuse joins without a user token (members-only drops). Default: anonymous shoppers
    /// still join, each with a random identity nobody else can claim.
    pub required: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            secret: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            issuer: None,
            audience: None,
            cookie: None,
            leeway_secs: 30,
            required: false,
        }
    }
}

impl IdentityConfig {
    /// Whether a key is configured: then every join must carry a user token.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.jwks_url.is_some()
    }

    /// Secret length, key-set URL, cookie name and refresh rules.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        if let Some(secret) = &self.secret {
            if secret.0.len() < MIN_IDENTITY_SECRET_LEN {
                bad(
                    "identity.secret",
                    "must be at least 32 bytes (HS256 keys shorter than the hash are guessable)",
                );
            }
        }
        if let Some(url) = &self.jwks_url {
            let parsed = url.parse::<http::Uri>().ok();
            let ok = parsed.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                bad("identity.jwks_url", "must be an http:// or https:// URL");
            }
        }
        if !(10..=86_400).contains(&self.jwks_refresh_secs) {
            bad("identity.jwks_refresh_secs", "must be between 10 and 86400");
        }
        if self.leeway_secs > 300 {
            bad("identity.leeway_secs", "must be at most 300");
        }
        if let Some(name) = &self.cookie {
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token_char) {
                bad(
                    "identity.cookie",
                    "must be a cookie name (letters, digits, - _ .)",
                );
            }
            if name.starts_with("rg_") {
                bad(
                    "identity.cookie",
                    "must not start with rg_ (rushgate's own cookies)",
                );
            }
        }
        if !self.enabled()
            && (self.issuer.is_some()
                || self.audience.is_some()
                || self.cookie.is_some()
                || self.required)
        {
            bad(
                "identity",
                "issuer, audience, cookie and required need a key: set identity.secret or \
                 identity.jwks_url",
            );
        }
    }
}
