//! Passes from a running server validate with another JWT library (`jwt-simple`, not the
//! signer's `jsonwebtoken`) using only the public key published at `/.well-known/jwks.json`, for
//! EdDSA and for ES256; forged passes are rejected by that library and by the server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    Claims, Duration as JwtDuration, ECDSAP256KeyPairLike as _, ECDSAP256PublicKeyLike as _,
    ES256KeyPair, ES256PublicKey, Ed25519KeyPair, Ed25519PublicKey, EdDSAKeyPairLike as _,
    EdDSAPublicKeyLike as _, JWTClaims, Token, UnixTimeStamp, VerificationOptions,
};
use rushgate::config::PassAlgorithm;
use rushgate::pass::{PassIssuer, PassKeys};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::{assert_problem, now_secs};
use crate::harness::*;

/// The claims rushgate adds to the registered ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoomClaims {
    room: String,
    pos: u64,
}

/// A verifier built from the JWKS alone.
enum PublicKey {
    Ed(Ed25519PublicKey),
    Es(ES256PublicKey),
}

impl PublicKey {
    fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<RoomClaims>, jwt_simple::Error> {
        match self {
            PublicKey::Ed(k) => k.verify_token::<RoomClaims>(token, Some(options)),
            PublicKey::Es(k) => k.verify_token::<RoomClaims>(token, Some(options)),
        }
    }
}

fn b64(field: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(field.as_str().expect("base64url string"))
        .expect("base64url")
}

/// Reads the JWKS over HTTP, checks its shape for `alg`, and builds the public key from it.
async fn key_from_jwks(app: &TestApp, alg: PassAlgorithm) -> (PublicKey, String) {
    let resp = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .expect("jwks");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/jwk-set+json")
    );
    let jwks: Value = resp.json().await.expect("jwks json");
    let keys = jwks["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1, "{jwks}");
    let k = &keys[0];
    let kid = k["kid"].as_str().expect("kid").to_string();
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], alg.as_str());
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(k.get(private).is_none(), "JWKS leaks `{private}`: {k}");
    }
    let (key, thumbprint_input) = match alg {
        PassAlgorithm::EdDSA => {
            assert_eq!(k["kty"], "OKP");
            assert_eq!(k["crv"], "Ed25519");
            assert!(k.get("y").is_none());
            let x = b64(&k["x"]);
            assert_eq!(x.len(), 32);
            (
                PublicKey::Ed(Ed25519PublicKey::from_bytes(&x).expect("Ed25519 key")),
                format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    k["x"].as_str().unwrap()
                ),
            )
        }
        PassAlgorithm::ES256 => {
            assert_eq!(k["kty"], "EC");
            assert_eq!(k["crv"], "P-256");
            let (x, y) = (b64(&k["x"]), b64(&k["y"]));
            assert_eq!((x.len(), y.len()), (32, 32));
            let mut sec1 = vec![0x04];
            sec1.extend(x);
            sec1.extend(y);
            (
                PublicKey::Es(ES256PublicKey::from_bytes(&sec1).expect("P-256 point")),
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    k["x"].as_str().unwrap(),
                    k["y"].as_str().unwrap()
                ),
            )
        }
    };
    // kid = the RFC 7638 thumbprint (prefix), computed here independently.
    let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
    assert!(
        thumbprint.starts_with(&kid) && kid.len() >= 8,
        "kid {kid} is not a prefix of the RFC 7638 thumbprint {thumbprint}"
    );
    (key, kid)
}

fn options(kid: &str) -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(["rushgate".to_string()].into()),
        allowed_audiences: Some(["shop".to_string()].into()),
        required_key_id: Some(kid.to_string()),
        time_tolerance: Some(JwtDuration::from_secs(5)),
        ..Default::default()
    }
}

/// Joins a free room, validates the pass with jwt-simple against the JWKS, then checks that
/// forged passes are rejected by jwt-simple and by the server.
async fn pass_validates_with_jwt_simple(app: &TestApp, id: &str, alg: PassAlgorithm) {
    let before = now_secs();
    let joined = app.join(id, None, None).await;
    assert_eq!(joined.status.as_u16(), 201, "{}", joined.body);
    assert_eq!(joined.str("state"), "admitted", "{}", joined.body);
    let pass = joined.str("pass").to_string();
    let ticket = joined.str("ticket").to_string();
    let sub = ticket.split('.').nth(1).expect("ticket id").to_string();
    assert!(
        joined
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("rg_pass_{id}={pass};"))),
        "the pass cookie carries the same pass"
    );

    // Header: alg, typ and the kid of the JWKS key.
    let (key, kid) = key_from_jwks(app, alg).await;
    let meta = Token::decode_metadata(&pass).expect("pass header");
    assert_eq!(meta.algorithm(), alg.as_str());
    assert_eq!(meta.key_id(), Some(kid.as_str()));
    assert_eq!(meta.signature_type(), Some("JWT"));

    // Claims.
    let claims = key
        .verify(&pass, options(&kid))
        .unwrap_or_else(|e| panic!("jwt-simple rejects a genuine {alg} pass: {e}"));
    let after = now_secs();
    assert_eq!(claims.issuer.as_deref(), Some("rushgate"));
    assert_eq!(
        claims
            .audiences
            .clone()
            .expect("aud")
            .into_string()
            .unwrap(),
        "shop"
    );
    assert_eq!(claims.subject.as_deref(), Some(sub.as_str()));
    assert_eq!(claims.custom.room, id);
    assert_eq!(claims.custom.pos, 1, "admitted at once, first in line");
    let iat = claims.issued_at.expect("iat").as_secs();
    let nbf = claims.invalid_before.expect("nbf").as_secs();
    let exp = claims.expires_at.expect("exp").as_secs();
    assert!(
        (before..=after).contains(&iat),
        "iat {iat} not in {before}..={after}"
    );
    assert_eq!(nbf, iat);
    assert_eq!(exp, joined.u64("pass_expires_at"));
    assert!(
        (599..=601).contains(&(exp - iat)),
        "session_seconds is 600: iat {iat} exp {exp}"
    );
    let jti = claims.jwt_id.clone().expect("jti");
    assert!(
        jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
        "jti {jti}"
    );
    // The raw payload has exactly the documented claims.
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(pass.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["aud", "exp", "iat", "iss", "jti", "nbf", "pos", "room", "sub"]
    );

    // jwt-simple enforces what we asked of it: another audience, a later clock, another kid.
    let mut wrong_aud = options(&kid);
    wrong_aud.allowed_audiences = Some(["other-shop".to_string()].into());
    assert!(key.verify(&pass, wrong_aud).is_err());
    let mut later = options(&kid);
    later.artificial_time = Some(UnixTimeStamp::from_secs(exp + 60));
    assert!(key.verify(&pass, later).is_err(), "expired pass accepted");
    assert!(key.verify(&pass, options("not-the-kid")).is_err());

    // The server agrees with jwt-simple.
    let verified = app
        .send(
            app.client
                .post(app.api("passes/verify"))
                .json(&json!({ "token": pass })),
        )
        .await;
    assert_eq!(verified.status.as_u16(), 200, "{}", verified.body);
    assert_eq!(verified.body["valid"], true);
    let c = &verified.body["claims"];
    assert_eq!(c["sub"], sub.as_str());
    assert_eq!(c["room"], id);
    assert_eq!(c["jti"], jti.as_str());
    assert_eq!(
        (c["iat"].as_u64(), c["exp"].as_u64()),
        (Some(iat), Some(exp))
    );

    // Forgeries with the very same claims and kid, signed by keys that are not the server's.
    let forged_claims = || {
        Claims::with_custom_claims(
            RoomClaims {
                room: id.to_string(),
                pos: 1,
            },
            JwtDuration::from_secs(600),
        )
        .with_issuer("rushgate")
        .with_audience("shop")
        .with_subject(&sub)
        .with_jwt_id(&jti)
    };
    let mut forgeries = vec![
        (
            "jwt-simple Ed25519 key".to_string(),
            Ed25519KeyPair::generate()
                .with_key_id(&kid)
                .sign(forged_claims())
                .unwrap(),
        ),
        (
            "jwt-simple P-256 key".to_string(),
            ES256KeyPair::generate()
                .with_key_id(&kid)
                .sign(forged_claims())
                .unwrap(),
        ),
    ];
    for other_alg in [PassAlgorithm::EdDSA, PassAlgorithm::ES256] {
        let pem = PassKeys::generate_pem(other_alg).unwrap();
        let stranger = PassIssuer::new(
            PassKeys::from_pem(&pem, other_alg).unwrap(),
            "rushgate",
            "shop",
        );
        let genuine = app
            .app
            .as_ref()
            .unwrap()
            .state
            .passes
            .verify(&pass)
            .unwrap();
        forgeries.push((
            format!("rushgate issuer with another {other_alg} key"),
            stranger.issue_claims(&genuine).unwrap(),
        ));
    }
    for (label, forged) in &forgeries {
        assert!(
            key.verify(forged, options(&kid)).is_err(),
            "jwt-simple accepts a pass forged with a {label}"
        );
        let r = app
            .send(
                app.client
                    .post(app.api("passes/verify"))
                    .json(&json!({ "token": forged })),
            )
            .await;
        assert_problem(&r, 401, "invalid-pass", label);
        // Presented as the pass cookie with the genuine ticket, a forgery is not taken as the
        // admission: the server looks the session up itself and signs a fresh pass.
        let polled = app
            .send(
                app.client
                    .get(app.api(&format!("rooms/{id}/position")))
                    .bearer_auth(&ticket)
                    .header("cookie", format!("rg_pass_{id}={forged}")),
            )
            .await;
        assert_eq!(polled.status.as_u16(), 200, "{}", polled.body);
        assert_ne!(polled.str("pass"), forged.as_str(), "{label}");
        assert!(key.verify(polled.str("pass"), options(&kid)).is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_pass_validates_with_jwt_simple_from_the_jwks() {
    let (_redis, url) = store_url(StoreKind::Redis).await;
    let id = room_id();
    let app = spawn_app(config(url, vec![room(&id)])).await;
    pass_validates_with_jwt_simple(&app, &id, PassAlgorithm::EdDSA).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_pass_validates_with_jwt_simple_from_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/es256.pem");
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    c.passes.algorithm = PassAlgorithm::ES256;
    c.passes.signing_key_file = key_file.clone();
    c.passes.generate_missing_key = true;
    let app = spawn_app(c).await;

    // The server created a P-256 PKCS#8 key at the configured path; it is the JWKS key.
    let pem = std::fs::read_to_string(&key_file).expect("the server wrote the key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem:.40}");
    let keys = PassKeys::from_pem(&pem, PassAlgorithm::ES256).expect("P-256 key");
    assert!(PassKeys::from_pem(&pem, PassAlgorithm::EdDSA).is_err());
    let (_, kid) = key_from_jwks(&app, PassAlgorithm::ES256).await;
    assert_eq!(keys.kid(), kid);

    pass_validates_with_jwt_simple(&app, &id, PassAlgorithm::ES256).await;
    app.stop().await;

    // A restart on the same file keeps the key (and the kid).
    let mut c = config(None, vec![room(&id)]);
    c.passes.algorithm = PassAlgorithm::ES256;
    c.passes.signing_key_file = key_file;
    let app = spawn_app(c).await;
    let (_, kid_again) = key_from_jwks(&app, PassAlgorithm::ES256).await;
    assert_eq!(kid_again, kid);
    app.stop().await;
}
