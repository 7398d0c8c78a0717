//! `[passes]`: how admission passes are signed (issuer, audience, algorithm, key file) and the
//! HMAC secret of queue tickets.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

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
}

impl fmt::Display for PassAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

impl PassesConfig {
    /// Issuer and audience are set; the ticket secret is long enough.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut bad = |field: &str, msg: &str| problems.push(Problem::new(field, msg));
        if self.issuer.is_empty() {
            bad("passes.issuer", "must not be empty");
        }
        if self.audience.is_empty() {
            bad("passes.audience", "must not be empty");
        }
        if self.ticket_secret.0.len() < 8 {
            bad("passes.ticket_secret", "must be at least 8 characters");
        }
    }
}
