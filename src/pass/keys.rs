//! The pass signing key: parsing PKCS#8 PEM (Ed25519 or P-256), generating new keys,
//! loading or atomically creating the key file, and the public JWKS document (with an
//! RFC 7638 thumbprint `kid`) the shop verifies passes against.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::LineEnding;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::config::PassAlgorithm;

use super::KeyError;

/// The JOSE algorithm of jsonwebtoken for a configured pass algorithm.
pub(super) fn jwt_algorithm(alg: PassAlgorithm) -> Algorithm {
    match alg {
        PassAlgorithm::EdDSA => Algorithm::EdDSA,
        PassAlgorithm::ES256 => Algorithm::ES256,
    }
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

    /// The private key passes are signed with (never leaves this module tree).
    pub(super) fn encoding_key(&self) -> &EncodingKey {
        &self.inner.encoding
    }

    /// The public key passes are verified against, in the form jsonwebtoken expects.
    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.inner.decoding
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
    let alg = jwt_algorithm(alg);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    use jsonwebtoken::Validation;

    use crate::pass::fixtures::{issue, issuer, ALGS, NOW};
    use crate::pass::issuer::unix_now;
    use crate::pass::{PassClaims, PassIssuer};

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
            let mut v = Validation::new(jwt_algorithm(alg));
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
