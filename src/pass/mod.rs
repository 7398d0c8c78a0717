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
//!
//! Code map (the submodules are private; everything is re-exported here):
//! `ticket` signs and verifies tickets and derives waiter identities; `keys` loads,
//! generates and publishes (as JWKS) the pass signing key; `issuer` issues and verifies
//! passes and remembers verified ones; `identity` verifies
//! the shop's user tokens (who a shopper is). The two error enums below are shared by all three.

mod identity;
mod issuer;
mod keys;
mod ticket;

#[cfg(test)]
mod fixtures;

use std::path::PathBuf;

pub use identity::{UserId, UserTokenError, UserTokens, MAX_USER_ID_LEN, MAX_USER_TOKEN_LEN};
pub use issuer::{Holder, PassClaims, PassIssuer, MAX_PASS_LEN, PASS_LEEWAY_SECS};
pub use keys::PassKeys;
pub use ticket::{TicketClaims, TicketSigner, MAX_TICKET_LEN};

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
    /// The token is genuine but was revoked: its session ended or its place moved to another
    /// device.
    #[error("token was revoked: the session ended or the place moved to another device")]
    Revoked,
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
