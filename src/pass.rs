//! Queue tickets and admission passes.
//!
//! Two kinds of tokens leave the waiting room:
//!
//! * **Tickets** ([`TicketSigner`]) are what a waiter holds while queued. They are
//!   compact `room.id.seq.iat.pos.sig` strings authenticated with HMAC-SHA256 under
//!   a secret shared by all rushgate nodes. They are checked on every poll, so
//!   verification is allocation-light and never touches JSON.
//! * **Passes** ([`PassIssuer`]) are what an admitted waiter carries to the shop.
//!   They are compact JWTs signed with an asymmetric key (EdDSA or ES256), so the
//!   shop can verify them offline against the JWKS published by [`PassKeys::jwks_json`]
//!   without ever holding a signing secret.
//!
//! Nothing in this module panics on attacker-controlled input: every parse step
//! returns a [`TokenError`] instead.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use dashmap::DashMap;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use hmac::digest::{Digest as _, Key, KeyInit};
use hmac::{Hmac, Mac as _};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::LineEnding;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation prefix mixed into every ticket MAC, so a MAC computed for
/// another purpose with the same secret (e.g. [`TicketSigner::user_identity`])
/// can never be replayed as a ticket signature. The `1` versions the format.
const TICKET_MAC_PREFIX: &[u8] = b"rgt1.";
/// Domain-separation prefix for user identities (see [`TICKET_MAC_PREFIX`]).
const USER_MAC_PREFIX: &[u8] = b"user:";
/// Longest ticket we are willing to look at. A real ticket is at most
/// 64 + 16 + 3 * 20 + 43 + 5 = 188 bytes; anything longer is rejected before any work.
pub const MAX_TICKET_LEN: usize = 256;
/// Length of an unpadded base64url HMAC-SHA256 tag.
const TICKET_SIG_B64_LEN: usize = 43;
/// Longest room id accepted inside a ticket.
const MAX_ROOM_LEN: usize = 64;
/// Exact length of a waiter identity.
pub const IDENTITY_LEN: usize = 16;
/// Longest pass we are willing to parse; real passes are ~400-500 bytes.
pub const MAX_PASS_LEN: usize = 4096;
/// Clock-skew tolerance for `exp`/`nbf` between the issuing node and the verifier.
pub const PASS_LEEWAY_SECS: u64 = 5;

/// Why a ticket or pass token was rejected. Display text is shown to clients (no secrets).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token could not be parsed (bad structure, encoding, JSON or numbers).
    #[error("token is malformed")]
    Malformed,
    /// The token parsed but its signature/MAC does not verify, or it claims an
    /// algorithm other than the configured one.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `exp` (plus leeway) is in the past.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` (minus leeway) is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// The token is genuine but was issued for another room (the room it belongs to).
    #[error("token belongs to room `{0}`")]
    WrongRoom(String),
    /// The token is genuine but its `iss` or `aud` is not ours.
    #[error("token issuer or audience does not match")]
    WrongAudience,
}

/// Problems loading / creating signing keys (used at startup and by CLI).
///
/// Messages name files but never include key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, creating or writing the key file (or its directory) failed.
    #[error("cannot {action} key file `{}`: {error}", path.display())]
    Io {
        /// What was being attempted ("read", "create", "write", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The PEM text is not an Ed25519 private key in PKCS#8 form.
    #[error("not a valid Ed25519 PKCS#8 PEM key")]
    InvalidEd25519,
    /// The PEM text is not a P-256 private key in PKCS#8 (or SEC1) form.
    #[error("not a valid P-256 PKCS#8 PEM key")]
    InvalidP256,
    /// A key file exists but its content is not a usable key.
    #[error("key file `{}`: {reason}", path.display())]
    InvalidKeyFile {
        /// The offending file.
        path: PathBuf,
        /// Why its content was rejected.
        reason: Box<KeyError>,
    },
    /// The operating system random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// Encoding a key (PKCS#8 / PEM) failed.
    #[error("cannot encode key: {0}")]
    Encode(String),
    /// Producing a signature failed (or the key failed its sign/verify self-check).
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Pass signature algorithm (config `passes.algorithm`, values "EdDSA" | "ES256").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassAlgorithm {
    /// Ed25519 signatures (RFC 8037), the default: small, fast, deterministic.
    EdDSA,
    /// ECDSA over P-256 with SHA-256, for verifiers that lack Ed25519.
    ES256,
}

impl PassAlgorithm {
    /// The JOSE `alg` name, identical to the serde/config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PassAlgorithm::EdDSA => "EdDSA",
            PassAlgorithm::ES256 => "ES256",
        }
    }

    fn jwt_algorithm(self) -> Algorithm {
        match self {
            PassAlgorithm::EdDSA => Algorithm::EdDSA,
            PassAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for PassAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Tickets
// ---------------------------------------------------------------------------

/// Claims of a queue ticket. Ticket = what a waiter holds while waiting.
///
/// For a ticket to round-trip, `room` must match `[a-z0-9_-]{1,64}` and `id`
/// must match `[A-Za-z0-9_-]{16}`; [`TicketSigner::verify`] rejects anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketClaims {
    /// Room the waiter joined.
    pub room: String,
    /// Waiter identity ([`TicketSigner::user_identity`] or [`TicketSigner::anonymous_identity`]).
    pub id: String,
    /// Queue sequence number assigned at join.
    pub seq: u64,
    /// Join time, unix seconds.
    pub iat: u64,
    /// Position in the queue at join.
    pub pos: u64,
}

/// HMAC-SHA256 signer/verifier of tickets. Cloning is cheap (one `Arc`).
///
/// The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct TicketSigner {
    // Pre-keyed MAC state: cloning it per operation skips re-hashing the key pads.
    mac: Arc<HmacSha256>,
}

impl fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketSigner")
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl TicketSigner {
    /// Creates a signer keyed with `secret` (any length; use at least 32 random bytes).
    /// Tokens signed by signers built from equal secrets verify on each other.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC (RFC 2104) hashes keys longer than the block and zero-pads the rest.
        // Doing that here lets us use the infallible fixed-size constructor instead
        // of `new_from_slice`, whose `Result` can never be `Err` but would otherwise
        // need an `expect`.
        let mut key = Key::<HmacSha256>::default();
        if secret.len() > key.len() {
            let digest = Sha256::digest(secret);
            key.iter_mut().zip(digest.iter()).for_each(|(k, d)| *k = *d);
        } else {
            key.iter_mut().zip(secret.iter()).for_each(|(k, s)| *k = *s);
        }
        Self {
            mac: Arc::new(<HmacSha256 as KeyInit>::new(&key)),
        }
    }

    /// Signs `t` as `{room}.{id}.{seq}.{iat}.{pos}.{sig}` where
    /// `sig = base64url-nopad(HMAC-SHA256(secret, "rgt1." + everything before the last dot))`.
    ///
    /// The output contains only cookie-safe characters provided `room` and `id`
    /// follow the documented charsets; claims outside them produce a token that
    /// [`TicketSigner::verify`] rejects as [`TokenError::Malformed`].
    pub fn sign(&self, t: &TicketClaims) -> String {
        let mut out = format!("{}.{}.{}.{}.{}", t.room, t.id, t.seq, t.iat, t.pos);
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(TICKET_MAC_PREFIX);
        mac.update(out.as_bytes());
        let tag = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Verifies a ticket and returns its claims.
    ///
    /// Never panics. Inputs longer than [`MAX_TICKET_LEN`], with the wrong number of
    /// fields, bad charsets, non-decimal numbers or a badly encoded tag are
    /// [`TokenError::Malformed`]; a well-formed ticket whose MAC does not match
    /// (checked in constant time) is [`TokenError::BadSignature`]. Only the two
    /// returned `String`s are allocated.
    pub fn verify(&self, token: &str) -> Result<TicketClaims, TokenError> {
        if token.len() > MAX_TICKET_LEN {
            return Err(TokenError::Malformed);
        }
        let (message, sig_b64) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut fields = message.split('.');
        let mut next = || fields.next().ok_or(TokenError::Malformed);
        let room = next()?;
        let id = next()?;
        let seq = next()?;
        let iat = next()?;
        let pos = next()?;
        if fields.next().is_some() {
            return Err(TokenError::Malformed);
        }
        if !is_room_id(room) || !is_identity(id) {
            return Err(TokenError::Malformed);
        }
        let seq = parse_decimal(seq)?;
        let iat = parse_decimal(iat)?;
        let pos = parse_decimal(pos)?;

        if sig_b64.len() != TICKET_SIG_B64_LEN {
            return Err(TokenError::Malformed);
        }
        // 43 chars decode to exactly 32 bytes; the buffer is larger only because the
        // decoder's length estimate rounds up to whole 4-char groups (33 bytes).
        let mut sig = [0u8; 36];
        let written = URL_SAFE_NO_PAD
            .decode_slice(sig_b64, &mut sig)
            .map_err(|_| TokenError::Malformed)?;
        let sig = sig.get(..written).ok_or(TokenError::Malformed)?;
        if sig.len() != 32 {
            return Err(TokenError::Malformed);
        }

        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(TICKET_MAC_PREFIX);
        mac.update(message.as_bytes());
        mac.verify_slice(sig)
            .map_err(|_| TokenError::BadSignature)?;

        Ok(TicketClaims {
            room: room.to_owned(),
            id: id.to_owned(),
            seq,
            iat,
            pos,
        })
    }

    /// Stable identity for a shop user key: `"u"` + the first 15 characters of
    /// `base64url(HMAC(secret, "user:" + user))`. Always 16 cookie-safe characters;
    /// the same user maps to the same id on every node sharing the secret, and the
    /// user key cannot be recovered from it.
    pub fn user_identity(&self, user: &str) -> String {
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(USER_MAC_PREFIX);
        mac.update(user.as_bytes());
        let tag = mac.finalize().into_bytes();
        identity_from_bytes('u', &tag)
    }

    /// Random identity for an anonymous waiter: `"a"` + 15 base64url characters
    /// (90 bits) from the thread-local CSPRNG (ChaCha seeded from the OS).
    /// Always 16 cookie-safe characters.
    pub fn anonymous_identity() -> String {
        let mut bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut bytes);
        identity_from_bytes('a', &bytes)
    }
}

/// `prefix` + first 15 base64url chars of `bytes` (which must hold ≥ 12 bytes;
/// 12 bytes encode to exactly 16 chars, so encoding only those gives the same
/// prefix as encoding everything).
fn identity_from_bytes(prefix: char, bytes: &[u8]) -> String {
    let head = bytes.get(..12).unwrap_or(bytes);
    let mut out = String::with_capacity(IDENTITY_LEN + 1);
    out.push(prefix);
    URL_SAFE_NO_PAD.encode_string(head, &mut out);
    out.truncate(IDENTITY_LEN);
    out
}

fn is_room_id(s: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_identity(s: &str) -> bool {
    s.len() == IDENTITY_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Strict decimal: digits only (no sign, no whitespace), must fit in u64.
fn parse_decimal(s: &str) -> Result<u64, TokenError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

// ---------------------------------------------------------------------------
// Pass keys
// ---------------------------------------------------------------------------

/// Claims of an admission pass (compact JWT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassClaims {
    /// Issuer (config), checked on verify.
    pub iss: String,
    /// Audience (the shop), checked on verify.
    pub aud: String,
    /// Waiter identity the pass was issued to.
    pub sub: String,
    /// Room the pass admits to.
    pub room: String,
    /// Issue time, unix seconds.
    pub iat: u64,
    /// Not valid before, unix seconds.
    pub nbf: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Unique pass id (uuid v4, simple form), for single-use tracking by the shop.
    pub jti: String,
    /// Position in the queue at join.
    pub pos: u64,
    /// Optional stock reservation id attached to the pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsv: Option<String>,
}

/// Signing key + its public JWK. Cloning is cheap (one `Arc`).
///
/// `Debug` shows only the algorithm and kid.
#[derive(Clone)]
pub struct PassKeys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    alg: PassAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwks: Bytes,
}

impl fmt::Debug for PassKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassKeys")
            .field("alg", &self.inner.alg)
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

impl PassKeys {
    /// Parses a PKCS#8 PEM private key for the algorithm (Ed25519 for EdDSA,
    /// P-256 for ES256; a SEC1 `EC PRIVATE KEY` PEM is also accepted for P-256).
    ///
    /// On success the key has passed a sign-then-verify self-check, so issuing
    /// passes with it will not fail for key reasons.
    pub fn from_pem(pem: &str, alg: PassAlgorithm) -> Result<Self, KeyError> {
        let (encoding, decoding, thumbprint_input, jwk_members) = match alg {
            PassAlgorithm::EdDSA => {
                let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                    .map_err(|_| KeyError::InvalidEd25519)?;
                let der = sk
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Encode(e.to_string()))?;
                let public = sk.verifying_key().to_bytes();
                let x = URL_SAFE_NO_PAD.encode(public);
                (
                    EncodingKey::from_ed_der(der.as_bytes()),
                    // jsonwebtoken's Ed25519 verifier takes the raw 32-byte public key.
                    DecodingKey::from_ed_der(&public),
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    format!(r#""kty":"OKP","crv":"Ed25519","x":"{x}""#),
                )
            }
            PassAlgorithm::ES256 => {
                let sk = p256::SecretKey::from_pkcs8_pem(pem)
                    .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
                    .map_err(|_| KeyError::InvalidP256)?;
                let der = sk
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Encode(e.to_string()))?;
                let point = sk.public_key().to_encoded_point(false);
                let (Some(px), Some(py)) = (point.x(), point.y()) else {
                    return Err(KeyError::InvalidP256);
                };
                let x = URL_SAFE_NO_PAD.encode(px);
                let y = URL_SAFE_NO_PAD.encode(py);
                (
                    EncodingKey::from_ec_der(der.as_bytes()),
                    // jsonwebtoken's P-256 verifier takes a SEC1 (uncompressed) point.
                    DecodingKey::from_ec_der(point.as_bytes()),
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    format!(r#""kty":"EC","crv":"P-256","x":"{x}","y":"{y}""#),
                )
            }
        };

        // RFC 7638: SHA-256 over the required members in lexicographic order, no
        // whitespace. All values are base64url, so no JSON escaping is needed.
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let kid: String = thumbprint.chars().take(16).collect();
        let jwks = format!(
            r#"{{"keys":[{{{jwk_members},"kid":"{kid}","use":"sig","alg":"{}"}}]}}"#,
            alg.as_str()
        );

        self_check(&encoding, &decoding, alg)?;

        Ok(Self {
            inner: Arc::new(KeysInner {
                alg,
                encoding,
                decoding,
                kid,
                jwks: Bytes::from(jwks),
            }),
        })
    }

    /// Generates a new random private key for `alg` and returns it as PKCS#8 PEM
    /// (LF line endings), loadable by [`PassKeys::from_pem`].
    pub fn generate_pem(alg: PassAlgorithm) -> Result<String, KeyError> {
        // Raw bytes come from `try_fill_bytes` rather than `generate(&mut OsRng)`
        // so an OS RNG failure is an error instead of a panic.
        let mut seed = Zeroizing::new([0u8; 32]);
        let pem = match alg {
            PassAlgorithm::EdDSA => {
                fill_os_random(seed.as_mut())?;
                ed25519_dalek::SigningKey::from_bytes(&seed)
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| KeyError::Encode(e.to_string()))?
            }
            PassAlgorithm::ES256 => {
                // A uniformly random 32-byte string is a valid scalar unless it is
                // zero or ≥ the group order (probability ~2^-32); retry in that case.
                let mut key = None;
                for _ in 0..16 {
                    fill_os_random(seed.as_mut())?;
                    if let Ok(k) = p256::SecretKey::from_slice(seed.as_ref()) {
                        key = Some(k);
                        break;
                    }
                }
                let key = key.ok_or_else(|| {
                    KeyError::Random("could not draw a valid P-256 scalar".to_owned())
                })?;
                key.to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| KeyError::Encode(e.to_string()))?
            }
        };
        Ok(pem.to_string())
    }

    /// Reads the PEM key file at `path`. When it does not exist and
    /// `create_if_missing` is set, generates a key, creates parent directories and
    /// publishes the file atomically with mode 0600, returning `created = true` so
    /// the caller can warn that this is a development key.
    ///
    /// Safe against concurrent first starts sharing a volume: the file is written
    /// to a temporary name and hard-linked into place, so readers never see a
    /// partial key and the loser of the race loads the winner's key.
    pub fn load_or_create(
        path: &Path,
        alg: PassAlgorithm,
        create_if_missing: bool,
    ) -> Result<(Self, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => Ok((Self::from_file_pem(path, &pem, alg)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create_if_missing => {
                let pem = Self::generate_pem(alg)?;
                match publish_new_file(path, pem.as_bytes())? {
                    true => Ok((Self::from_file_pem(path, &pem, alg)?, true)),
                    // Another process created it first: use theirs so all nodes agree.
                    false => {
                        let pem = std::fs::read_to_string(path).map_err(|error| KeyError::Io {
                            action: "read",
                            path: path.to_owned(),
                            error,
                        })?;
                        Ok((Self::from_file_pem(path, &pem, alg)?, false))
                    }
                }
            }
            Err(error) => Err(KeyError::Io {
                action: "read",
                path: path.to_owned(),
                error,
            }),
        }
    }

    fn from_file_pem(path: &Path, pem: &str, alg: PassAlgorithm) -> Result<Self, KeyError> {
        Self::from_pem(pem, alg).map_err(|reason| KeyError::InvalidKeyFile {
            path: path.to_owned(),
            reason: Box::new(reason),
        })
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> PassAlgorithm {
        self.inner.alg
    }

    /// kid = first 16 chars of the RFC 7638 JWK thumbprint (base64url SHA-256 of the
    /// canonical JSON `{"crv","kty","x"}` for OKP, `{"crv","kty","x","y"}` for EC).
    /// Depends only on the public key, so every node loading the same key agrees.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The JWKS document bytes (serialized once at construction):
    /// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":..,"kid":..,"use":"sig","alg":"EdDSA"}]}`
    /// or for ES256 `{"keys":[{"kty":"EC","crv":"P-256","x":..,"y":..,"kid":..,"use":"sig","alg":"ES256"}]}`.
    /// Contains only public material.
    pub fn jwks_json(&self) -> Bytes {
        self.inner.jwks.clone()
    }
}

fn fill_os_random(buf: &mut [u8]) -> Result<(), KeyError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| KeyError::Random(e.to_string()))
}

/// Signs and verifies a probe so a key jsonwebtoken cannot use (or a public key
/// that does not match the private one) fails at startup rather than on the
/// first admission.
fn self_check(
    encoding: &EncodingKey,
    decoding: &DecodingKey,
    alg: PassAlgorithm,
) -> Result<(), KeyError> {
    const PROBE: &[u8] = b"rushgate pass key self-check";
    let alg = alg.jwt_algorithm();
    let sig = jsonwebtoken::crypto::sign(PROBE, encoding, alg)
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    match jsonwebtoken::crypto::verify(&sig, PROBE, decoding, alg) {
        Ok(true) => Ok(()),
        Ok(false) => Err(KeyError::Signing(
            "self-check signature did not verify".to_owned(),
        )),
        Err(e) => Err(KeyError::Signing(e.to_string())),
    }
}

/// Atomically creates `path` with `contents` and mode 0600. Returns `Ok(false)`
/// if the file appeared meanwhile (created by someone else).
fn publish_new_file(path: &Path, contents: &[u8]) -> Result<bool, KeyError> {
    use std::os::unix::fs::OpenOptionsExt as _;

    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |error| KeyError::Io {
            action,
            path,
            error,
        }
    };

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create directory for", path))?;
    }

    let mut suffix = [0u8; 6];
    fill_os_random(&mut suffix)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", URL_SAFE_NO_PAD.encode(suffix)));
    let tmp = PathBuf::from(tmp_name);

    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(KeyError::Io {
            action: "write",
            path: tmp,
            error,
        });
    }

    // hard_link never replaces an existing file, unlike rename.
    let linked = std::fs::hard_link(&tmp, path);
    // The temporary name is only scaffolding; failing to remove it is harmless.
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(KeyError::Io {
            action: "create",
            path: path.to_owned(),
            error,
        }),
    }
}

// ---------------------------------------------------------------------------
// Pass issuing / verification
// ---------------------------------------------------------------------------

/// Issues and verifies passes. Cloning is cheap (one `Arc`).
#[derive(Clone, Debug)]
pub struct PassIssuer {
    inner: Arc<IssuerInner>,
}

#[derive(Debug)]
struct IssuerInner {
    keys: PassKeys,
    issuer: String,
    audience: String,
    validation: Validation,
    /// Passes whose signature and structure verified, keyed by the whole token, with their
    /// claims. A shopper presents the same pass on every proxied request and purchase, and an
    /// Ed25519 verification (~50 µs) was over 40% of the CPU of those paths (perf, issue 8);
    /// `iss`/`aud` and time are still checked on every use. Bounded: cleared when full.
    /// Claims are shared, not copied, on a hit; the keys (whole tokens of ~300 bytes) hash
    /// with foldhash, a fraction of SipHash's cost, still seeded per process.
    verified: DashMap<Box<str>, Arc<PassClaims>, foldhash::fast::RandomState>,
}

/// Most verified passes remembered (about 4 MB at ~500 bytes per token and claims).
const VERIFIED_CACHE_MAX: usize = 8_192;

impl PassIssuer {
    /// Creates an issuer whose passes carry `iss = issuer`, `aud = audience`, and
    /// whose verification accepts only those values and only the key's algorithm.
    pub fn new(keys: PassKeys, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(keys.algorithm().jwt_algorithm());
        // jsonwebtoken only verifies the signature and algorithm here; claims are
        // checked in `verify_at` against an explicit clock so results are
        // deterministic and map onto precise `TokenError`s.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            inner: Arc::new(IssuerInner {
                keys,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                validation,
                verified: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            }),
        }
    }

    /// The keys passes are signed with.
    pub fn keys(&self) -> &PassKeys {
        &self.inner.keys
    }

    /// Signs a pass for `sub` in `room`: header `alg` + `typ: "JWT"` + `kid`;
    /// `iat = nbf = now_unix`; `exp = exp_unix`; `jti` = fresh uuid v4 (simple form).
    pub fn issue(
        &self,
        room: &str,
        sub: &str,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
    ) -> Result<String, KeyError> {
        self.issue_claims(&self.claims_for(room, sub, pos, now_unix, exp_unix, None))
    }

    /// Like [`PassIssuer::issue`] but attaches a stock reservation id (`rsv`).
    pub fn issue_with_reservation(
        &self,
        room: &str,
        sub: &str,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
        rsv: &str,
    ) -> Result<String, KeyError> {
        self.issue_claims(&self.claims_for(
            room,
            sub,
            pos,
            now_unix,
            exp_unix,
            Some(rsv.to_owned()),
        ))
    }

    /// Signs exactly `claims` (same header as [`PassIssuer::issue`]). The caller is
    /// responsible for `iss`/`aud` matching this issuer if it should verify here.
    pub fn issue_claims(&self, claims: &PassClaims) -> Result<String, KeyError> {
        let keys = &self.inner.keys;
        let mut header = Header::new(keys.algorithm().jwt_algorithm());
        header.kid = Some(keys.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &keys.inner.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))
    }

    fn claims_for(
        &self,
        room: &str,
        sub: &str,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
        rsv: Option<String>,
    ) -> PassClaims {
        PassClaims {
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            sub: sub.to_owned(),
            room: room.to_owned(),
            iat: now_unix,
            nbf: now_unix,
            exp: exp_unix,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            pos,
            rsv,
        }
    }

    /// [`PassIssuer::verify_at`] with the current system time.
    pub fn verify(&self, token: &str) -> Result<Arc<PassClaims>, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies a pass as of `now_unix` and returns its claims, shared with the verified-pass
    /// cache (a pass seen before is not verified or copied again; its time is still checked).
    ///
    /// Checks, in order: size (> [`MAX_PASS_LEN`] bytes → `Malformed`), structure and
    /// header, algorithm (only the configured one; `none`, `HS*` and others are
    /// rejected), signature (`BadSignature`), claim shape (`Malformed`), `iss`/`aud`
    /// (`WrongAudience`), then time with [`PASS_LEEWAY_SECS`] of skew tolerance:
    /// `nbf > now + leeway` → `NotYetValid`, `now ≥ exp + leeway` → `Expired`.
    /// Never panics.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Arc<PassClaims>, TokenError> {
        if token.is_empty() || token.len() > MAX_PASS_LEN {
            return Err(TokenError::Malformed);
        }
        let inner = &self.inner;
        let claims = match inner.verified.get(token) {
            Some(hit) => hit.value().clone(),
            None => {
                let claims = jsonwebtoken::decode::<PassClaims>(
                    token,
                    &inner.keys.inner.decoding,
                    &inner.validation,
                )
                .map_err(|e| map_jwt_error(e.kind()))?
                .claims;
                let claims = Arc::new(claims);
                if inner.verified.len() >= VERIFIED_CACHE_MAX {
                    inner.verified.clear();
                }
                inner.verified.insert(token.into(), claims.clone());
                claims
            }
        };

        if claims.iss != inner.issuer || claims.aud != inner.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.nbf > now_unix.saturating_add(PASS_LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        if now_unix >= claims.exp.saturating_add(PASS_LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// [`PassIssuer::verify`], then requires `claims.room == room`, else
    /// [`TokenError::WrongRoom`] naming the pass's room.
    pub fn verify_for_room(&self, token: &str, room: &str) -> Result<Arc<PassClaims>, TokenError> {
        self.verify_for_room_at(token, room, unix_now())
    }

    /// [`PassIssuer::verify_at`] plus the room check of [`PassIssuer::verify_for_room`].
    pub fn verify_for_room_at(
        &self,
        token: &str,
        room: &str,
        now_unix: u64,
    ) -> Result<Arc<PassClaims>, TokenError> {
        let claims = self.verify_at(token, now_unix)?;
        if claims.room != room {
            return Err(TokenError::WrongRoom(claims.room.clone()));
        }
        Ok(claims)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn map_jwt_error(kind: &JwtErrorKind) -> TokenError {
    match kind {
        JwtErrorKind::InvalidSignature => TokenError::BadSignature,
        // A header naming another algorithm (HS256 with our public key as the
        // secret, ES256 vs EdDSA, ...) is an attempt to get a signature accepted
        // that we did not make.
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::UnsupportedAlgorithm
        | JwtErrorKind::InvalidEddsaKey
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        // Structure, base64, JSON (including an unknown `alg` such as "none"),
        // UTF-8 and anything added to the non-exhaustive enum later.
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const NOW: u64 = 1_700_000_000;

    fn claims() -> TicketClaims {
        TicketClaims {
            room: "drop-42_a".to_owned(),
            id: TicketSigner::anonymous_identity(),
            seq: 1234,
            iat: NOW,
            pos: 77,
        }
    }

    fn weird_inputs() -> Vec<String> {
        let mut v: Vec<String> = vec![
            String::new(),
            ".".into(),
            ".....".into(),
            "......".into(),
            ".".repeat(10_000),
            "a".repeat(10_000),
            "é.ü.€.𝄞.\u{0}.\u{FFFD}".into(),
            "🦀.🦀.🦀.🦀.🦀.🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀".into(),
            "room.AAAAAAAAAAAAAAAA.1.2.3.".into(),
            "room.AAAAAAAAAAAAAAAA.1.2.3.!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!".into(),
            "room.AAAAAAAAAAAAAAAA.+1.2.3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "room.AAAAAAAAAAAAAAAA.99999999999999999999999.2.3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "eyJhbGciOiJFZERTQSJ9..".into(),
            "eyJhbGciOiJFZERTQSJ9.e30.".into(),
            "eyJhbGciOiJFZERTQSJ9.e30.AAAA".into(),
            "a.b.c".into(),
            "a.b.c.d".into(),
        ];
        // Deterministic pseudo-random bytes, lossily turned into text.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in [1usize, 7, 43, 100, 255, 256, 257, 1000, 5000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            v.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        v
    }

    // ---- tickets -----------------------------------------------------------

    #[test]
    fn ticket_roundtrip() {
        let s = TicketSigner::new(b"0123456789abcdef0123456789abcdef");
        let c = claims();
        let tok = s.sign(&c);
        assert!(tok
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(tok.split('.').count(), 6);
        assert_eq!(s.verify(&tok), Ok(c));

        let big = TicketClaims {
            room: "r".repeat(64),
            id: "u".repeat(16),
            seq: u64::MAX,
            iat: u64::MAX,
            pos: u64::MAX,
        };
        let tok = s.sign(&big);
        assert!(tok.len() <= MAX_TICKET_LEN);
        assert_eq!(s.verify(&tok), Ok(big));
    }

    #[test]
    fn ticket_any_flipped_char_fails() {
        let s = TicketSigner::new(b"secret-secret-secret-secret-1234");
        let tok = s.sign(&claims());
        for (i, ch) in tok.char_indices() {
            for repl in ['A', 'B', '0', '.', '-'] {
                if repl == ch {
                    continue;
                }
                let mut t = tok.clone();
                t.replace_range(i..i + 1, repl.encode_utf8(&mut [0; 4]));
                assert!(s.verify(&t).is_err(), "accepted {t} (pos {i})");
            }
        }
        // Truncation and extension fail too.
        assert!(s.verify(&tok[..tok.len() - 1]).is_err());
        assert!(s.verify(&format!("{tok}A")).is_err());
    }

    #[test]
    fn ticket_other_secret_is_bad_signature() {
        let a = TicketSigner::new(b"secret-a");
        let b = TicketSigner::new(b"secret-b");
        let tok = a.sign(&claims());
        assert_eq!(b.verify(&tok), Err(TokenError::BadSignature));
    }

    #[test]
    fn ticket_structural_errors_are_malformed() {
        let s = TicketSigner::new(b"k");
        let good = s.sign(&claims());
        let sig = good.rsplit_once('.').map(|(_, s)| s).unwrap_or_default();
        for bad in [
            format!("Room.AAAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.+1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.1.2.3.4.{sig}"),
            format!(".AAAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.18446744073709551616.2.3.{sig}"),
            "x".repeat(MAX_TICKET_LEN + 1),
        ] {
            assert_eq!(s.verify(&bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn ticket_verify_never_panics() {
        let s = TicketSigner::new(b"k");
        for input in weird_inputs() {
            assert!(s.verify(&input).is_err());
        }
    }

    #[test]
    fn hmac_key_normalisation_matches_new_from_slice() {
        for secret in [&b""[..], b"short", &[7u8; 64], &[9u8; 65], &[1u8; 200]] {
            let ours = TicketSigner::new(secret);
            let mut reference = match <HmacSha256 as KeyInit>::new_from_slice(secret) {
                Ok(m) => m,
                Err(e) => panic!("{e}"),
            };
            reference.update(b"user:bob");
            let expected = reference.finalize().into_bytes();
            let mut m = HmacSha256::clone(&ours.mac);
            m.update(b"user:bob");
            assert_eq!(m.finalize().into_bytes(), expected, "len {}", secret.len());
        }
    }

    #[test]
    fn identities() {
        let s = TicketSigner::new(b"k1");
        let id = s.user_identity("customer-17");
        assert_eq!(id.len(), IDENTITY_LEN);
        assert!(id.starts_with('u'));
        assert!(is_identity(&id));
        assert_eq!(id, s.user_identity("customer-17"));
        assert_eq!(id, TicketSigner::new(b"k1").user_identity("customer-17"));
        assert_ne!(id, s.user_identity("customer-18"));
        assert_ne!(id, TicketSigner::new(b"k2").user_identity("customer-17"));

        let a = TicketSigner::anonymous_identity();
        let b = TicketSigner::anonymous_identity();
        assert_ne!(a, b);
        assert_eq!(a.len(), IDENTITY_LEN);
        assert!(a.starts_with('a'));
        assert!(is_identity(&a));
        let many: std::collections::HashSet<String> = (0..1000)
            .map(|_| TicketSigner::anonymous_identity())
            .collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn ticket_signer_debug_is_redacted() {
        let dbg = format!("{:?}", TicketSigner::new(b"super-secret"));
        assert!(dbg.contains("[REDACTED]"));
        assert!(!dbg.contains("super-secret"));
    }

    // ---- passes ------------------------------------------------------------

    fn keys(alg: PassAlgorithm) -> PassKeys {
        let pem = match PassKeys::generate_pem(alg) {
            Ok(p) => p,
            Err(e) => panic!("generate: {e}"),
        };
        match PassKeys::from_pem(&pem, alg) {
            Ok(k) => k,
            Err(e) => panic!("from_pem: {e}"),
        }
    }

    fn issuer(alg: PassAlgorithm) -> PassIssuer {
        PassIssuer::new(keys(alg), "rushgate", "shop")
    }

    fn issue(iss: &PassIssuer, room: &str, now: u64, exp: u64) -> String {
        match iss.issue(room, "uABCDEFGHIJKLMNO", 5, now, exp) {
            Ok(t) => t,
            Err(e) => panic!("issue: {e}"),
        }
    }

    const ALGS: [PassAlgorithm; 2] = [PassAlgorithm::EdDSA, PassAlgorithm::ES256];

    #[test]
    fn a_remembered_pass_is_still_checked_for_time_and_room() {
        let iss = issuer(PassAlgorithm::EdDSA);
        let tok = issue(&iss, "drop", NOW, NOW + 300);
        assert!(iss.verify_at(&tok, NOW + 1).is_ok());
        // Second use comes from the verified cache: expiry and room still apply.
        assert!(iss.verify_at(&tok, NOW + 2).is_ok());
        assert_eq!(
            iss.verify_at(&tok, NOW + 300 + PASS_LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            iss.verify_for_room_at(&tok, "other", NOW + 2),
            Err(TokenError::WrongRoom(_))
        ));
        // A token differing in one byte is not a cache hit.
        let mut forged = tok.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap_or_default();
        assert!(iss.verify_at(&forged, NOW + 2).is_err());
    }

    #[test]
    fn pass_roundtrip() {
        for alg in ALGS {
            let iss = issuer(alg);
            let tok = issue(&iss, "drop", NOW, NOW + 300);
            let c = iss.verify_at(&tok, NOW + 10).unwrap();
            assert_eq!(c.iss, "rushgate");
            assert_eq!(c.aud, "shop");
            assert_eq!(c.sub, "uABCDEFGHIJKLMNO");
            assert_eq!(c.room, "drop");
            assert_eq!((c.iat, c.nbf, c.exp, c.pos), (NOW, NOW, NOW + 300, 5));
            assert_eq!(c.jti.len(), 32);
            assert_eq!(c.rsv, None);
            assert_eq!(iss.verify_for_room_at(&tok, "drop", NOW).unwrap(), c);

            // Fresh jti every time.
            let tok2 = issue(&iss, "drop", NOW, NOW + 300);
            assert_ne!(iss.verify_at(&tok2, NOW).unwrap().jti, c.jti);

            let r = iss
                .issue_with_reservation("drop", "s", 1, NOW, NOW + 60, "res-1")
                .unwrap();
            assert_eq!(
                iss.verify_at(&r, NOW).unwrap().rsv.as_deref(),
                Some("res-1")
            );

            // Real clock path.
            let now = unix_now();
            let tok = issue(&iss, "drop", now, now + 60);
            assert_eq!(iss.verify_for_room(&tok, "drop").unwrap().room, "drop");
        }
    }

    #[test]
    fn pass_other_key_is_bad_signature() {
        for alg in ALGS {
            let a = issuer(alg);
            let b = issuer(alg);
            let tok = issue(&a, "drop", NOW, NOW + 300);
            assert_eq!(b.verify_at(&tok, NOW), Err(TokenError::BadSignature));
        }
        // Cross-algorithm: an ES256 pass presented to an EdDSA verifier and vice versa.
        let ed = issuer(PassAlgorithm::EdDSA);
        let es = issuer(PassAlgorithm::ES256);
        let t = issue(&es, "drop", NOW, NOW + 300);
        assert_eq!(ed.verify_at(&t, NOW), Err(TokenError::BadSignature));
        let t = issue(&ed, "drop", NOW, NOW + 300);
        assert_eq!(es.verify_at(&t, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn pass_tampered_payload_is_rejected() {
        for alg in ALGS {
            let iss = issuer(alg);
            let tok = issue(&iss, "drop", NOW, NOW + 300);
            let parts: Vec<&str> = tok.split('.').collect();
            let mut c = (*iss.verify_at(&tok, NOW).unwrap()).clone();
            c.room = "other".into();
            let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
            let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
            assert_eq!(iss.verify_at(&forged, NOW), Err(TokenError::BadSignature));
        }
    }

    #[test]
    fn pass_time_checks() {
        for alg in ALGS {
            let iss = issuer(alg);
            let tok = issue(&iss, "drop", NOW, NOW + 300);
            // Leeway: still fine until exp + 5.
            assert!(iss.verify_at(&tok, NOW + 304).is_ok());
            assert_eq!(iss.verify_at(&tok, NOW + 305), Err(TokenError::Expired));
            assert_eq!(iss.verify_at(&tok, u64::MAX), Err(TokenError::Expired));
            // Skewed verifier clock slightly behind the issuer is fine; far behind is not.
            assert!(iss.verify_at(&tok, NOW - 5).is_ok());
            assert_eq!(iss.verify_at(&tok, NOW - 6), Err(TokenError::NotYetValid));
            assert_eq!(iss.verify_at(&tok, 0), Err(TokenError::NotYetValid));

            let huge = issue(&iss, "drop", NOW, u64::MAX);
            assert!(iss.verify_at(&huge, u64::MAX - 1).is_ok());
        }
    }

    #[test]
    fn pass_wrong_audience_and_issuer() {
        for alg in ALGS {
            let keys = keys(alg);
            let ours = PassIssuer::new(keys.clone(), "rushgate", "shop");
            let other_aud = PassIssuer::new(keys.clone(), "rushgate", "other-shop");
            let other_iss = PassIssuer::new(keys, "someone-else", "shop");
            let t = issue(&other_aud, "drop", NOW, NOW + 60);
            assert_eq!(ours.verify_at(&t, NOW), Err(TokenError::WrongAudience));
            let t = issue(&other_iss, "drop", NOW, NOW + 60);
            assert_eq!(ours.verify_at(&t, NOW), Err(TokenError::WrongAudience));
        }
    }

    #[test]
    fn pass_wrong_room() {
        let iss = issuer(PassAlgorithm::EdDSA);
        let t = issue(&iss, "drop-a", NOW, NOW + 60);
        assert_eq!(
            iss.verify_for_room_at(&t, "drop-b", NOW),
            Err(TokenError::WrongRoom("drop-a".into()))
        );
        assert_eq!(
            TokenError::WrongRoom("drop-a".into()).to_string(),
            "token belongs to room `drop-a`"
        );
    }

    #[test]
    fn pass_alg_none_and_hmac_rejected() {
        for alg in ALGS {
            let iss = issuer(alg);
            let tok = issue(&iss, "drop", NOW, NOW + 300);
            let payload = tok.split('.').nth(1).unwrap().to_owned();

            for header in [
                r#"{"alg":"none","typ":"JWT"}"#,
                r#"{"alg":"None","typ":"JWT"}"#,
                r#"{"typ":"JWT"}"#,
            ] {
                let h = URL_SAFE_NO_PAD.encode(header);
                for sig in ["", "AAAA"] {
                    let t = format!("{h}.{payload}.{sig}");
                    let r = iss.verify_at(&t, NOW);
                    assert!(
                        matches!(r, Err(TokenError::Malformed | TokenError::BadSignature)),
                        "{header} {sig}: {r:?}"
                    );
                }
                assert!(iss.verify_at(&format!("{h}.{payload}"), NOW).is_err());
            }

            // Classic key confusion: HS256 keyed with the published public JWK bytes.
            let jwks: serde_json::Value = serde_json::from_slice(&iss.keys().jwks_json()).unwrap();
            let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
            let claims = iss.verify_at(&tok, NOW).unwrap();
            for secret in [x.as_bytes().to_vec(), URL_SAFE_NO_PAD.decode(&x).unwrap()] {
                let forged = jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &*claims,
                    &EncodingKey::from_secret(&secret),
                )
                .unwrap();
                assert_eq!(iss.verify_at(&forged, NOW), Err(TokenError::BadSignature));
            }
        }
    }

    #[test]
    fn pass_header_has_kid_and_typ() {
        for alg in ALGS {
            let iss = issuer(alg);
            let tok = issue(&iss, "drop", NOW, NOW + 60);
            let h = jsonwebtoken::decode_header(&tok).unwrap();
            assert_eq!(h.kid.as_deref(), Some(iss.keys().kid()));
            assert_eq!(h.typ.as_deref(), Some("JWT"));
            assert_eq!(h.alg, alg.jwt_algorithm());
            assert_eq!(iss.keys().kid().len(), 16);
            assert_eq!(iss.keys().algorithm(), alg);
        }
    }

    #[test]
    fn jwks_verifies_pass_with_jsonwebtoken() {
        for alg in ALGS {
            let iss = issuer(alg);
            let now = unix_now();
            let tok = issue(&iss, "drop", now, now + 300);
            let jwks: serde_json::Value = serde_json::from_slice(&iss.keys().jwks_json()).unwrap();
            let keys = jwks["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 1);
            let k = &keys[0];
            assert_eq!(k["kid"], iss.keys().kid());
            assert_eq!(k["use"], "sig");
            assert_eq!(k["alg"], alg.as_str());
            let decoding = match alg {
                PassAlgorithm::EdDSA => {
                    assert_eq!(k["kty"], "OKP");
                    assert_eq!(k["crv"], "Ed25519");
                    assert!(k.get("y").is_none());
                    DecodingKey::from_ed_components(k["x"].as_str().unwrap()).unwrap()
                }
                PassAlgorithm::ES256 => {
                    assert_eq!(k["kty"], "EC");
                    assert_eq!(k["crv"], "P-256");
                    DecodingKey::from_ec_components(
                        k["x"].as_str().unwrap(),
                        k["y"].as_str().unwrap(),
                    )
                    .unwrap()
                }
            };
            let mut v = Validation::new(alg.jwt_algorithm());
            v.set_audience(&["shop"]);
            v.set_issuer(&["rushgate"]);
            let data = jsonwebtoken::decode::<PassClaims>(&tok, &decoding, &v).unwrap();
            assert_eq!(data.claims.room, "drop");

            // The document is also a valid JWK set for jsonwebtoken's own parser.
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_slice(&iss.keys().jwks_json()).unwrap();
            let jwk = set.find(iss.keys().kid()).unwrap();
            let dk = DecodingKey::from_jwk(jwk).unwrap();
            assert!(jsonwebtoken::decode::<PassClaims>(&tok, &dk, &v).is_ok());
        }
    }

    #[test]
    fn kid_is_rfc7638_thumbprint_prefix() {
        // RFC 8037 appendix A.3: thumbprint of the example Ed25519 public key.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let tp = URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()));
        assert_eq!(tp, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

        // RFC 8037 A.1 private key in PKCS#8 PEM form.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";
        let k = PassKeys::from_pem(pem, PassAlgorithm::EdDSA).unwrap();
        assert_eq!(k.kid(), &tp[..16]);
    }

    #[test]
    fn from_pem_rejects_wrong_keys() {
        let ed = PassKeys::generate_pem(PassAlgorithm::EdDSA).unwrap();
        let es = PassKeys::generate_pem(PassAlgorithm::ES256).unwrap();
        assert!(matches!(
            PassKeys::from_pem(&es, PassAlgorithm::EdDSA),
            Err(KeyError::InvalidEd25519)
        ));
        assert!(matches!(
            PassKeys::from_pem(&ed, PassAlgorithm::ES256),
            Err(KeyError::InvalidP256)
        ));
        assert!(matches!(
            PassKeys::from_pem("garbage", PassAlgorithm::EdDSA),
            Err(KeyError::InvalidEd25519)
        ));
        assert_eq!(
            KeyError::InvalidEd25519.to_string(),
            "not a valid Ed25519 PKCS#8 PEM key"
        );
        assert_eq!(
            KeyError::InvalidP256.to_string(),
            "not a valid P-256 PKCS#8 PEM key"
        );
        // Same PEM loads to the same kid; Debug shows no key material.
        let a = PassKeys::from_pem(&ed, PassAlgorithm::EdDSA).unwrap();
        let b = PassKeys::from_pem(&ed, PassAlgorithm::EdDSA).unwrap();
        assert_eq!(a.kid(), b.kid());
        let dbg = format!("{a:?} {:?}", PassIssuer::new(a.clone(), "i", "a"));
        assert!(dbg.contains(a.kid()));
        assert!(!dbg.contains(ed.lines().nth(1).unwrap()));
    }

    #[test]
    fn algorithm_serde_names() {
        assert_eq!(
            serde_json::to_string(&PassAlgorithm::EdDSA).unwrap(),
            "\"EdDSA\""
        );
        assert_eq!(
            serde_json::to_string(&PassAlgorithm::ES256).unwrap(),
            "\"ES256\""
        );
        let a: PassAlgorithm = serde_json::from_str("\"ES256\"").unwrap();
        assert_eq!(a, PassAlgorithm::ES256);
        assert!(serde_json::from_str::<PassAlgorithm>("\"es256\"").is_err());
    }

    #[test]
    fn pass_verify_never_panics() {
        let iss = issuer(PassAlgorithm::EdDSA);
        let mut inputs = weird_inputs();
        inputs.push("a".repeat(MAX_PASS_LEN + 1));
        inputs.push(format!("{}.", "A".repeat(MAX_PASS_LEN)));
        for input in inputs {
            assert!(iss.verify_at(&input, NOW).is_err());
            assert!(iss.verify(&input).is_err());
        }
        let tok = issue(&iss, "drop", NOW, NOW + 60);
        assert_eq!(
            iss.verify_at(&format!("{tok}{}", "A".repeat(MAX_PASS_LEN)), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn load_or_create_writes_0600_and_reloads() {
        for alg in ALGS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("nested/dir/pass.pem");

            let missing = PassKeys::load_or_create(&path, alg, false);
            assert!(matches!(missing, Err(KeyError::Io { action: "read", .. })));
            assert!(!path.exists());

            let (k1, created) = PassKeys::load_or_create(&path, alg, true).unwrap();
            assert!(created);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // No temporary files left behind.
            assert_eq!(
                std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
                1
            );

            let (k2, created) = PassKeys::load_or_create(&path, alg, true).unwrap();
            assert!(!created);
            assert_eq!(k1.kid(), k2.kid());
            assert_eq!(k1.jwks_json(), k2.jwks_json());

            // A pass from the first load verifies with the reloaded key.
            let t = PassIssuer::new(k1, "i", "a")
                .issue("r", "s", 0, NOW, NOW + 9)
                .unwrap();
            assert!(PassIssuer::new(k2, "i", "a").verify_at(&t, NOW).is_ok());
        }
    }

    #[test]
    fn load_or_create_does_not_overwrite_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = PassKeys::load_or_create(&path, PassAlgorithm::EdDSA, true).unwrap_err();
        assert!(matches!(err, KeyError::InvalidKeyFile { .. }));
        assert!(err.to_string().contains("pass.pem"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn publish_new_file_loses_race_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        assert!(publish_new_file(&path, b"first").unwrap());
        assert!(!publish_new_file(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
