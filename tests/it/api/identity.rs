//! Shop-signed identity over HTTP: with `[identity]` a bare user key is refused, forged,
//! expired and foreign tokens are refused, a valid token joins as its `sub` from any client,
//! and the shop's user id comes back in the pass (`uid`), on the order stream and on the coupon
//! log (`user_id`). Both stores; the key-set (JWKS) form against a local key-set server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use rushgate::config::{Config, CouponConfig, IdentityConfig, RoomMode, SaleConfig, Secret};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::both_stores;
use crate::harness::*;

const SECRET: &str = "shop-identity-secret-0123456789abcdef";

fn now() -> u64 {
    rushgate::clock::now_ms() / 1000
}

/// A user token signed with `secret` (HS256) carrying `claims`.
fn hs_token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

fn good_claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 300, "iss": "the-shop", "aud": "rushgate" })
}

fn identity_config(url: Option<String>, room_id: &str) -> Config {
    let mut r = room(room_id);
    r.mode = RoomMode::SafetyNet;
    let mut c = config(url, vec![r]);
    c.identity = IdentityConfig {
        secret: Some(Secret(SECRET.into())),
        issuer: Some("the-shop".into()),
        audience: Some("rushgate".into()),
        ..IdentityConfig::default()
    };
    let mut sale = SaleConfig::with_ids("idsale", room_id, 10);
    sale.per_user_limit = 5;
    c.sales = vec![sale];
    c.coupons = vec![CouponConfig {
        id: "idcoupon".into(),
        limit: 10,
        room: Some(room_id.into()),
    }];
    c.shop.api_key = Secret("test-shop-key-0123456789".into());
    c
}

async fn join_body(app: &TestApp, room: &str, body: Value) -> Reply {
    // A fresh client per join: no cookie jar, as a second device would be.
    let client = reqwest::Client::new();
    reply(
        client
            .post(app.api(&format!("rooms/{room}/join")))
            .json(&body)
            .send()
            .await
            .expect("join"),
    )
    .await
}

/// The payload of a compact JWT, unverified (the test only reads what the server signed).
fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

both_stores!(shop_signed_identity);

async fn shop_signed_identity(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let app = spawn_app(identity_config(url, &id)).await;
    app.wait_sales_read().await;

    // A bare user key is refused and changes nothing.
    let bare = join_body(&app, &id, json!({ "user": "u1" })).await;
    assert_eq!(bare.status, StatusCode::BAD_REQUEST, "{}", bare.body);
    assert!(
        bare.str("type").ends_with("user-token-required"),
        "{}",
        bare.body
    );
    assert!(bare.str("detail").contains("user_token"), "{}", bare.body);
    app.settle(&id).await;
    let status = app.status(&id).await;
    assert_eq!(
        (status.u64("waiting"), status.u64("active")),
        (0, 0),
        "{}",
        status.body
    );

    // Forged, expired, wrong-audience, wrong-issuer, exp-less and sub-less tokens are refused.
    let refused = [
        (
            "forged",
            hs_token("another-secret-0123456789abcdef-xyz", good_claims("u1")),
        ),
        (
            "expired",
            hs_token(
                SECRET,
                json!({ "sub": "u1", "exp": now() - 120, "iss": "the-shop", "aud": "rushgate" }),
            ),
        ),
        (
            "audience",
            hs_token(
                SECRET,
                json!({ "sub": "u1", "exp": now() + 300, "iss": "the-shop", "aud": "someone-else" }),
            ),
        ),
        (
            "issuer",
            hs_token(
                SECRET,
                json!({ "sub": "u1", "exp": now() + 300, "iss": "mallory", "aud": "rushgate" }),
            ),
        ),
        (
            "no exp",
            hs_token(
                SECRET,
                json!({ "sub": "u1", "iss": "the-shop", "aud": "rushgate" }),
            ),
        ),
        (
            "no sub",
            hs_token(
                SECRET,
                json!({ "exp": now() + 300, "iss": "the-shop", "aud": "rushgate" }),
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in &refused {
        let r = join_body(&app, &id, json!({ "user_token": token })).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        assert!(
            r.str("type").ends_with("invalid-user-token"),
            "{what}: {}",
            r.body
        );
    }
    app.settle(&id).await;
    let status = app.status(&id).await;
    assert_eq!(
        (status.u64("waiting"), status.u64("active")),
        (0, 0),
        "{}",
        status.body
    );

    // A valid token joins as u1 (admitted at once in this empty room), and the pass names u1.
    let token = hs_token(SECRET, good_claims("u1"));
    let first = join_body(&app, &id, json!({ "user_token": token })).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.str("state"), "admitted", "{}", first.body);
    let pass = first.str("pass").to_string();
    let claims = payload(&pass);
    assert_eq!(claims["uid"], "u1", "{claims}");
    let sub = claims["sub"].as_str().expect("sub").to_string();

    // The same shop user from a second client gets the same place (not a second one).
    let again = hs_token(SECRET, good_claims("u1"));
    let second = join_body(&app, &id, json!({ "user_token": again })).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.str("state"), "admitted", "{}", second.body);
    assert_eq!(payload(second.str("pass"))["sub"], sub.as_str());
    // ... and its ticket, used alone, still names u1 on the next poll.
    let ticket = second.str("ticket").to_string();
    let polled = app.position(&id, &ticket).await;
    assert_eq!(polled.str("state"), "admitted", "{}", polled.body);
    assert_eq!(payload(polled.str("pass"))["uid"], "u1");

    // A different shop user gets a different place.
    let other = join_body(
        &app,
        &id,
        json!({ "user_token": hs_token(SECRET, good_claims("u2")) }),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    assert_ne!(payload(other.str("pass"))["sub"], sub.as_str());

    // u2 leaves, then joins again with its token: the new place's ticket and pass carry the
    // generation the end raised, so they work (the old pass does not).
    let u2_pass = other.str("pass").to_string();
    let left = app.leave(&id, other.str("ticket")).await;
    assert_eq!(left.str("gave_up"), "admitted", "{}", left.body);
    let back = join_body(
        &app,
        &id,
        json!({ "user_token": hs_token(SECRET, good_claims("u2")) }),
    )
    .await;
    assert_eq!(back.status, StatusCode::CREATED, "{}", back.body);
    assert_eq!(back.str("state"), "admitted", "{}", back.body);
    let gate = |pass: String| {
        let url = app.api(&format!("rooms/{id}/gate"));
        let client = app.client.clone();
        async move {
            client
                .get(url)
                .bearer_auth(pass)
                .send()
                .await
                .expect("gate")
                .status()
        }
    };
    assert_eq!(
        gate(back.str("pass").to_string()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(gate(u2_pass).await, StatusCode::UNAUTHORIZED);
    let polled = app.position(&id, back.str("ticket")).await;
    assert_eq!(polled.str("state"), "admitted", "{}", polled.body);

    // The purchase's order-stream entry and the coupon log entry carry user_id = u1.
    let bought = app
        .send(
            app.client
                .post(app.api("sales/idsale/purchase"))
                .bearer_auth(&pass)
                .json(&json!({ "quantity": 1 })),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let coupon = app
        .send(
            app.client
                .post(app.api("coupons/idcoupon/claim"))
                .bearer_auth(&pass),
        )
        .await;
    assert_eq!(coupon.status, StatusCode::CREATED, "{}", coupon.body);
    let state = &app.app.as_ref().expect("running").state;
    let orders = state
        .sale_store
        .order_log(&typed_sale("idsale"))
        .await
        .expect("order log");
    let reserved: Vec<_> = orders
        .iter()
        .filter(|e| e.iter().any(|(k, v)| k == "event" && v == "reserved"))
        .collect();
    assert_eq!(reserved.len(), 1, "{orders:?}");
    let field = |e: &[(String, String)], name: &str| {
        e.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    assert_eq!(
        field(reserved[0], "user_id").as_deref(),
        Some("u1"),
        "{orders:?}"
    );
    assert_eq!(field(reserved[0], "user").as_deref(), Some(sub.as_str()));
    let log = state
        .sale_store
        .coupon_log(&typed_campaign("idcoupon"))
        .await
        .expect("coupon log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(field(&log[0], "user_id").as_deref(), Some("u1"), "{log:?}");
    app.stop().await;
}

/// A local key-set server: answers every request with the current JWKS document.
async fn jwks_server(doc: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let doc = doc.lock().expect("doc").clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

/// An Ed25519 key: its JWK (public) and a signer of EdDSA user tokens with `kid`.
fn ed_key(kid: &str) -> (Value, EncodingKey) {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let der = signing.to_pkcs8_der().expect("pkcs8");
    (
        json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA" }),
        EncodingKey::from_ed_der(der.as_bytes()),
    )
}

fn ed_token(key: &EncodingKey, kid: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &json!({ "sub": sub, "exp": now() + 300 }), key).expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_key_set_is_fetched_and_followed_by_kid() {
    let (jwk_a, key_a) = ed_key("key-a");
    let (jwk_b, key_b) = ed_key("key-b");
    let doc = Arc::new(Mutex::new(json!({ "keys": [jwk_a] }).to_string()));
    let url = jwks_server(doc.clone()).await;
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    c.identity = IdentityConfig {
        jwks_url: Some(url),
        jwks_refresh_secs: 3600,
        ..IdentityConfig::default()
    };
    let app = spawn_app(c).await;

    let joined = join_body(
        &app,
        &id,
        json!({ "user_token": ed_token(&key_a, "key-a", "ann") }),
    )
    .await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    // HS256 is refused without a secret (a key set never makes a shared secret).
    let hs = join_body(
        &app,
        &id,
        json!({ "user_token": hs_token(SECRET, good_claims("ann")) }),
    )
    .await;
    assert_eq!(hs.status, StatusCode::UNAUTHORIZED, "{}", hs.body);
    // A token signed by a key the set does not have is refused, naming the key id.
    let unknown = join_body(
        &app,
        &id,
        json!({ "user_token": ed_token(&key_b, "key-b", "bob") }),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{}", unknown.body);
    assert!(unknown.str("detail").contains("key-b"), "{}", unknown.body);
    // A kid signed by the wrong key is a bad signature.
    let swapped = join_body(
        &app,
        &id,
        json!({ "user_token": ed_token(&key_b, "key-a", "bob") }),
    )
    .await;
    assert_eq!(swapped.status, StatusCode::UNAUTHORIZED, "{}", swapped.body);

    // The shop rotates: key-b is published. A token of key-b is accepted once the node
    // refetches for the unknown kid (at most once per 10 s, so a made-up kid flood costs one
    // fetch).
    *doc.lock().expect("doc") = json!({ "keys": [jwk_a, jwk_b] }).to_string();
    wait_until(
        Duration::from_secs(20),
        "the rotated key is followed",
        || {
            let app = &app;
            let id = id.clone();
            let token = ed_token(&key_b, "key-b", "bob");
            async move {
                join_body(app, &id, json!({ "user_token": token }))
                    .await
                    .status
                    == StatusCode::CREATED
            }
        },
    )
    .await;
    app.stop().await;
}
