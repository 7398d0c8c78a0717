//! Admission passes: the JWT claims, issuing them with the pass key, and verifying them
//! (signature, algorithm, issuer/audience, time with leeway, room), with a bounded
//! cache of passes whose signature already verified.

use std::sync::Arc;

use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{jwt_algorithm, PassKeys};
use super::{KeyError, TokenError};

/// Longest pass we are willing to parse; real passes are ~400-500 bytes.
pub const MAX_PASS_LEN: usize = 4096;
/// Clock-skew tolerance for `exp`/`nbf` between the issuing node and the verifier.
pub const PASS_LEEWAY_SECS: u64 = 5;

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
    /// The shop's user id, when the shopper joined with a shop-signed user token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Holder generation of the place (see [`crate::pass::TicketClaims::gen`]): a pass of an
    /// older generation than the place's is revoked (moved or ended). Absent for 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gen: u32,
    /// Issued while the store was unreachable, on the node's lease (`on_store_error =
    /// "capped"`): within the room's limits, recorded in the store once it answers again.
    /// Absent for a pass issued normally.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deg: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who an admitted pass is for: the place's identity, its holder generation and the shop's
/// user id.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    /// The place's identity (`sub`).
    pub sub: &'a str,
    /// Holder generation (`gen`).
    pub gen: u32,
    /// The shop's user id (`uid`).
    pub uid: Option<&'a str>,
}

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
        let mut validation = Validation::new(jwt_algorithm(keys.algorithm()));
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

    /// Like [`PassIssuer::issue`] for `holder`: its identity, generation and user id.
    pub fn issue_to(
        &self,
        room: &str,
        holder: Holder<'_>,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
    ) -> Result<String, KeyError> {
        self.issue_holder(room, holder, pos, now_unix, exp_unix, false)
    }

    /// Like [`PassIssuer::issue_to`], marked as issued during a store outage (`deg`).
    pub fn issue_degraded(
        &self,
        room: &str,
        holder: Holder<'_>,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
    ) -> Result<String, KeyError> {
        self.issue_holder(room, holder, pos, now_unix, exp_unix, true)
    }

    fn issue_holder(
        &self,
        room: &str,
        holder: Holder<'_>,
        pos: u64,
        now_unix: u64,
        exp_unix: u64,
        deg: bool,
    ) -> Result<String, KeyError> {
        let mut claims = self.claims_for(room, holder.sub, pos, now_unix, exp_unix, None);
        claims.gen = holder.gen;
        claims.uid = holder.uid.map(str::to_owned);
        claims.deg = deg;
        self.issue_claims(&claims)
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
        let mut header = Header::new(jwt_algorithm(keys.algorithm()));
        header.kid = Some(keys.kid().to_owned());
        jsonwebtoken::encode(&header, claims, keys.encoding_key())
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
            uid: None,
            gen: 0,
            deg: false,
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
                    inner.keys.decoding_key(),
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

/// The system clock in unix seconds (0 if it reads before 1970).
pub(super) fn unix_now() -> u64 {
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

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey};

    use crate::config::PassAlgorithm;
    use crate::pass::fixtures::{issue, issuer, keys, weird_inputs, ALGS, NOW};

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
            assert_eq!(h.alg, jwt_algorithm(alg));
            assert_eq!(iss.keys().kid().len(), 16);
            assert_eq!(iss.keys().algorithm(), alg);
        }
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
}
