//! Shop-signed user tokens: how a shop vouches for who a shopper is. A user token is a JWT the
//! shop signs (HS256 with a secret shared with rushgate, or RS256 / ES256 / EdDSA with its own
//! key published as a JWKS); its `sub` is the shop's user id, `exp` is required. Verifying one
//! is local (the key set is cached); an unknown `kid` fetches the key set again, at most once
//! per [`JWKS_MIN_REFETCH`], so a shop that rotates keys is followed without a restart and a
//! flood of made-up `kid`s costs one fetch, not one per token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::IdentityConfig;

/// Longest user token looked at; anything longer is refused before any work.
pub const MAX_USER_TOKEN_LEN: usize = 4096;
/// Longest shop user id (`sub`) accepted.
pub const MAX_USER_ID_LEN: usize = 256;
/// Least time between two key-set fetches triggered by unknown `kid`s.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// Largest key-set document read.
const JWKS_MAX_BYTES: usize = 256 * 1024;
/// How long one key-set fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a user token was refused. Display text is shown to clients (no secrets, no key
/// material).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UserTokenError {
    /// Not a JWT, too long, or its claims are not JSON of the expected shape.
    #[error("user_token is malformed")]
    Malformed,
    /// The signature does not verify, or the algorithm is not one the shop's keys allow.
    #[error("user_token signature is invalid")]
    BadSignature,
    /// The token names a key id the shop's key set does not have.
    #[error("user_token is signed with unknown key id `{0}`")]
    UnknownKey(String),
    /// `exp` is missing: a user token must expire.
    #[error("user_token has no `exp` claim")]
    MissingExp,
    /// `exp` (plus leeway) is in the past.
    #[error("user_token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("user_token is not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("user_token issuer does not match")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("user_token audience does not match")]
    WrongAudience,
    /// `sub` is missing, empty, longer than 256 bytes or has control characters.
    #[error("user_token `sub` must be 1 to 256 printable bytes")]
    BadSubject,
    /// The shop's key set could not be fetched (the token may be fine; retry later).
    #[error("the shop's key set is unavailable: {0}")]
    KeysUnavailable(String),
}

/// A shop's user id, as its signed token named it (`sub`): 1 to 256 printable bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Checks the rule (1 to [`MAX_USER_ID_LEN`] bytes, no control characters).
    pub fn parse(s: &str) -> Option<UserId> {
        let ok = !s.is_empty() && s.len() <= MAX_USER_ID_LEN && !s.chars().any(char::is_control);
        ok.then(|| UserId(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Deserialize)]
struct UserClaims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

/// One key of the shop's key set and the algorithms it may verify.
struct ShopKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The shop's key set as last fetched, by `kid` (keys without one under `""`).
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<ShopKey>>,
}

/// Where the shop's key set comes from, and when it was last asked.
struct Jwks {
    url: http::Uri,
    set: ArcSwap<KeySet>,
    // Single flight: one fetch at a time, and not more often than JWKS_MIN_REFETCH when a
    // token names an unknown kid.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies user tokens with the configured secret and / or the shop's key set. Cheap to
/// clone (one `Arc`).
#[derive(Clone)]
pub struct UserTokens {
    inner: Arc<Inner>,
}

struct Inner {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTokens")
            .field("secret", &self.inner.secret.as_ref().map(|_| "[REDACTED]"))
            .field(
                "jwks_url",
                &self.inner.jwks.as_ref().map(|j| j.url.to_string()),
            )
            .finish()
    }
}

impl UserTokens {
    /// The verifier of `[identity]`, or `None` when no key is configured (then joins trust
    /// the caller's `user` key).
    pub fn from_config(config: &IdentityConfig) -> Option<UserTokens> {
        if !config.enabled() {
            return None;
        }
        let jwks = config
            .jwks_url
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .map(|url| Jwks {
                url,
                set: ArcSwap::from_pointee(KeySet::default()),
                last_fetch: tokio::sync::Mutex::new(None),
            });
        Some(UserTokens {
            inner: Arc::new(Inner {
                secret: config
                    .secret
                    .as_ref()
                    .map(|s| DecodingKey::from_secret(s.0.as_bytes())),
                jwks,
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway_secs,
            }),
        })
    }

    /// Whether the key set comes from a URL (and so needs [`UserTokens::refresh_keys`]).
    pub fn has_jwks(&self) -> bool {
        self.inner.jwks.is_some()
    }

    /// Verifies `token` at `now_unix` and returns its `sub`. Signature first (HS256 with the
    /// secret; other algorithms with the key set's key of the token's `kid`), then `exp`
    /// (required), `nbf`, `iss` and `aud` when configured, then `sub`.
    pub async fn verify(&self, token: &str, now_unix: u64) -> Result<UserId, UserTokenError> {
        if token.is_empty() || token.len() > MAX_USER_TOKEN_LEN {
            return Err(UserTokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| UserTokenError::Malformed)?;
        let claims = if header.alg == Algorithm::HS256 {
            let key = self
                .inner
                .secret
                .as_ref()
                .ok_or(UserTokenError::BadSignature)?;
            decode(token, key, Algorithm::HS256)?
        } else {
            let kid = header.kid.unwrap_or_default();
            let key = self.shop_key(&kid).await?;
            if !key.algorithms.contains(&header.alg) {
                return Err(UserTokenError::BadSignature);
            }
            decode(token, &key.key, header.alg)?
        };
        self.check(claims, now_unix)
    }

    fn check(&self, c: UserClaims, now: u64) -> Result<UserId, UserTokenError> {
        let inner = &self.inner;
        let exp = c.exp.ok_or(UserTokenError::MissingExp)?;
        if now >= exp.saturating_add(inner.leeway) {
            return Err(UserTokenError::Expired);
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now.saturating_add(inner.leeway))
        {
            return Err(UserTokenError::NotYetValid);
        }
        if let Some(iss) = &inner.issuer {
            if c.iss.as_deref() != Some(iss.as_str()) {
                return Err(UserTokenError::WrongIssuer);
            }
        }
        if let Some(aud) = &inner.audience {
            if !c.aud.contains(aud) {
                return Err(UserTokenError::WrongAudience);
            }
        }
        c.sub
            .as_deref()
            .and_then(UserId::parse)
            .ok_or(UserTokenError::BadSubject)
    }

    /// The key of `kid`, fetching the key set again (at most once per
    /// [`JWKS_MIN_REFETCH`]) when it is not known.
    async fn shop_key(&self, kid: &str) -> Result<Arc<ShopKey>, UserTokenError> {
        let jwks = self
            .inner
            .jwks
            .as_ref()
            .ok_or(UserTokenError::BadSignature)?;
        if let Some(key) = jwks.set.load().keys.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut last = jwks.last_fetch.lock().await;
            // Another request may have fetched while this one waited for the lock.
            if let Some(key) = jwks.set.load().keys.get(kid) {
                return Ok(key.clone());
            }
            if last.is_none_or(|t| t.elapsed() >= JWKS_MIN_REFETCH) {
                *last = Some(Instant::now());
                let set = fetch(&jwks.url)
                    .await
                    .map_err(UserTokenError::KeysUnavailable)?;
                jwks.set.store(Arc::new(set));
            }
        }
        jwks.set
            .load()
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| UserTokenError::UnknownKey(kid.chars().take(64).collect()))
    }

    /// Fetches the shop's key set now (at start and every `jwks_refresh_secs`). On failure
    /// the keys fetched before stay in use.
    pub async fn refresh_keys(&self) -> Result<usize, String> {
        let Some(jwks) = &self.inner.jwks else {
            return Ok(0);
        };
        let mut last = jwks.last_fetch.lock().await;
        *last = Some(Instant::now());
        let set = fetch(&jwks.url).await?;
        let n = set.keys.len();
        jwks.set.store(Arc::new(set));
        Ok(n)
    }
}

fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<UserClaims, UserTokenError> {
    let mut validation = Validation::new(alg);
    // Only the signature here; the claims are checked against an explicit clock in `check`.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<UserClaims>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            match e.kind() {
                InvalidSignature | InvalidAlgorithm | InvalidEcdsaKey | InvalidEddsaKey
                | InvalidRsaKey(_) | InvalidKeyFormat => UserTokenError::BadSignature,
                _ => UserTokenError::Malformed,
            }
        })
}

/// Which algorithms a JWK may verify: its `alg` when it names one, else every algorithm of
/// its key type.
fn algorithms_of(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters as P, EllipticCurve};
    if let Some(alg) = jwk
        .common
        .key_algorithm
        .and_then(|a| a.to_string().parse::<Algorithm>().ok())
    {
        return vec![alg];
    }
    match &jwk.algorithm {
        P::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        P::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        P::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // A symmetric key in a published key set would let anyone who reads it sign tokens.
        _ => vec![],
    }
}

/// Parses a JWKS document into usable keys (keys of unknown types are skipped).
fn parse_key_set(body: &[u8]) -> Result<KeySet, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let algorithms = algorithms_of(jwk);
        if algorithms.is_empty() {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            keys.insert(kid, Arc::new(ShopKey { key, algorithms }));
        }
    }
    if keys.is_empty() {
        return Err("the key set has no usable RS / ES / EdDSA key".into());
    }
    Ok(KeySet { keys })
}

async fn fetch(url: &http::Uri) -> Result<KeySet, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no system root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    let req = http::Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(JWKS_FETCH_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("GET {url} timed out"))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url} answered {}", resp.status()));
    }
    let body = tokio::time::timeout(
        JWKS_FETCH_TIMEOUT,
        Limited::new(resp.into_body(), JWKS_MAX_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("GET {url} timed out"))?
    .map_err(|e| format!("GET {url}: {e}"))?
    .to_bytes();
    parse_key_set(&body)
}
