//! Fuzzing: random and mutated tokens never panic the verifiers and are never accepted; random
//! bodies, headers, cookies and paths over HTTP never get a 5xx, and the server keeps serving.

use std::sync::OnceLock;

use futures::StreamExt as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE};
use reqwest::Method;
use rushgate::config::PassAlgorithm;
use rushgate::id::Identity;
use rushgate::pass::{PassIssuer, PassKeys, TicketClaims, TicketSigner, TokenError};
use serde_json::{json, Value};

use super::{is_problem, now_secs, raw_http};
use crate::harness::*;

fn signer() -> &'static TicketSigner {
    static S: OnceLock<TicketSigner> = OnceLock::new();
    S.get_or_init(|| TicketSigner::new(b"fuzz-ticket-secret-0123456789"))
}

/// One issuer per algorithm, with a freshly generated key.
fn issuers() -> &'static [PassIssuer; 2] {
    static I: OnceLock<[PassIssuer; 2]> = OnceLock::new();
    I.get_or_init(|| {
        [PassAlgorithm::EdDSA, PassAlgorithm::ES256].map(|alg| {
            let pem = PassKeys::generate_pem(alg).expect("generate key");
            let keys = PassKeys::from_pem(&pem, alg).expect("load key");
            PassIssuer::new(keys, "rushgate", "shop")
        })
    })
}

/// One edit of a token: what to do, where, and with which byte.
type Mutation = (u8, Index, u8);

fn mutation() -> impl Strategy<Value = Mutation> {
    (0u8..6, any::<Index>(), any::<u8>())
}

/// Characters tokens are made of, so that many mutations keep the token well-formed.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// Applies one mutation. The result may equal the input (e.g. swapping equal neighbours).
fn mutate(token: &str, (kind, at, byte): &Mutation) -> String {
    let mut b = token.as_bytes().to_vec();
    let len = b.len();
    match kind {
        0 if len > 0 => {
            let i = at.index(len);
            b[i] = if b[i] == *byte {
                byte.wrapping_add(1)
            } else {
                *byte
            };
        }
        1 if len > 0 => {
            b.remove(at.index(len));
        }
        2 => b.insert(at.index(len + 1), *byte),
        3 => b.truncate(at.index(len.max(1))),
        4 if len > 1 => b.swap(at.index(len - 1), at.index(len - 1) + 1),
        _ if len > 0 => {
            let i = at.index(len);
            let mut c = ALPHABET[usize::from(*byte) % ALPHABET.len()];
            if c == b[i] {
                c = ALPHABET[(usize::from(*byte) + 1) % ALPHABET.len()];
            }
            b[i] = c;
        }
        _ => b.push(*byte),
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn ticket_claims() -> impl Strategy<Value = TicketClaims> {
    (
        "[a-z0-9_-]{1,64}",
        "[A-Za-z0-9_-]{16}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(room, id, seq, iat, pos)| TicketClaims {
            room,
            id: Identity::parse(&id).expect("the strategy makes identities"),
            seq,
            iat,
            pos,
            gen: 0,
            uid: None,
        })
}

/// Strings shaped like tickets (right charsets and field count) but not signed.
const TICKET_SHAPE: &str =
    "[a-z0-9_-]{1,64}\\.[A-Za-z0-9_-]{16}\\.[0-9]{1,20}\\.[0-9]{1,20}\\.[0-9]{1,20}\\.[A-Za-z0-9_-]{43}";
/// Strings shaped like compact JWTs.
const JWT_SHAPE: &str = "[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,400}\\.[A-Za-z0-9_-]{0,100}";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ticket_verify_rejects_random_bytes(bytes in vec(any::<u8>(), 0..400)) {
        prop_assert!(signer().verify(&String::from_utf8_lossy(&bytes)).is_err());
    }

    #[test]
    fn ticket_verify_rejects_random_strings(s in "\\PC{0,300}") {
        prop_assert!(signer().verify(&s).is_err());
    }

    #[test]
    fn ticket_verify_rejects_unsigned_ticket_shapes(s in TICKET_SHAPE) {
        let r = signer().verify(&s);
        prop_assert!(
            matches!(r, Err(TokenError::BadSignature | TokenError::Malformed)),
            "{s}: {r:?}"
        );
    }

    #[test]
    fn ticket_mutations_are_never_accepted(
        claims in ticket_claims(),
        mutations in vec(mutation(), 1..24),
    ) {
        let token = signer().sign(&claims);
        prop_assert_eq!(signer().verify(&token), Ok(claims.clone()));
        for m in &mutations {
            let mutated = mutate(&token, m);
            if mutated != token {
                let r = signer().verify(&mutated);
                prop_assert!(r.is_err(), "{token} -> {mutated} accepted: {r:?}");
            }
        }
        // The same claims under another secret are a forgery.
        let forged = TicketSigner::new(b"another-secret-0123456789").sign(&claims);
        prop_assert_eq!(signer().verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn pass_verify_rejects_random_bytes(bytes in vec(any::<u8>(), 0..1200)) {
        let s = String::from_utf8_lossy(&bytes);
        for issuer in issuers() {
            prop_assert!(issuer.verify(&s).is_err());
        }
    }

    #[test]
    fn pass_verify_rejects_random_strings(s in "\\PC{0,600}") {
        for issuer in issuers() {
            prop_assert!(issuer.verify(&s).is_err());
        }
    }

    #[test]
    fn pass_verify_rejects_jwt_shapes(s in JWT_SHAPE, payload in any::<Option<Vec<u8>>>()) {
        // Random segments, or a real header with a random payload and signature.
        let candidates = [s.clone(), {
            let real = issuers()[0].issue("drop", "aAAAAAAAAAAAAAAA", 1, now_secs(), now_secs() + 60).unwrap();
            let header = real.split('.').next().unwrap().to_string();
            let payload = base64_url(&payload.unwrap_or_default());
            let sig = s.rsplit('.').next().unwrap_or_default().to_string();
            format!("{header}.{payload}.{sig}")
        }];
        for c in &candidates {
            for issuer in issuers() {
                prop_assert!(issuer.verify(c).is_err(), "{c}");
            }
        }
    }
}

proptest! {
    // ES256 verification is slow in debug builds; fewer cases, several mutations each.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pass_mutations_are_never_accepted(
        which in 0usize..2,
        room in "[a-z0-9_-]{1,64}",
        sub in "[A-Za-z0-9_-]{16}",
        pos in any::<u64>(),
        mutations in vec(mutation(), 1..12),
    ) {
        let issuer = &issuers()[which];
        let now = now_secs();
        let token = issuer.issue(&room, &sub, pos, now, now + 600).unwrap();
        let claims = issuer.verify(&token).unwrap();
        prop_assert_eq!((&claims.room, &claims.sub, claims.pos), (&room, &sub, pos));
        for m in &mutations {
            let mutated = mutate(&token, m);
            if mutated != token {
                let r = issuer.verify(&mutated);
                prop_assert!(r.is_err(), "{token} -> {mutated} accepted: {r:?}");
            }
        }
        // The same claims signed by the other algorithm's key are rejected.
        let other = &issuers()[1 - which];
        let forged = other.issue_claims(&claims).unwrap();
        prop_assert_eq!(issuer.verify(&forged), Err(TokenError::BadSignature));
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Target {
    Join,
    Position,
    Leave,
    Verify,
    /// A random path under the API with a random method.
    Path(String, Method),
}

#[derive(Debug, Clone)]
struct Case {
    target: Target,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    auth: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
}

/// Bytes a header value may carry (no control characters).
fn header_safe(mut bytes: Vec<u8>) -> Vec<u8> {
    for b in &mut bytes {
        if !(*b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80) {
            *b = b'?';
        }
    }
    bytes
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-_.".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,300}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-z]{1,6}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Token-like bytes: random, random text, mutated genuine tokens, unsigned ticket shapes, or a
/// genuine token as is.
fn token(valid: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        "\\PC{0,200}".prop_map(String::into_bytes),
        (select(valid.clone()), vec(mutation(), 1..4))
            .prop_map(|(t, ms)| { ms.iter().fold(t, |t, m| mutate(&t, m)).into_bytes() }),
        TICKET_SHAPE.prop_map(String::into_bytes),
        JWT_SHAPE.prop_map(String::into_bytes),
        select(valid).prop_map(String::into_bytes),
    ]
}

fn case(room: String, valid: Vec<String>) -> impl Strategy<Value = Case> {
    let methods = vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::HEAD,
    ];
    let target = prop_oneof![
        Just(Target::Join),
        Just(Target::Position),
        Just(Target::Leave),
        Just(Target::Verify),
        ("\\PC{0,80}", select(methods)).prop_map(|(p, m)| Target::Path(p, m)),
    ];
    let body = prop_oneof![
        1 => vec(any::<u8>(), 0..2048),
        1 => "\\PC{0,400}".prop_map(String::into_bytes),
        2 => json_value().prop_map(|v| json!({ "user": v }).to_string().into_bytes()),
        3 => token(valid.clone()).prop_map(|t| {
            json!({ "token": String::from_utf8_lossy(&t) })
                .to_string()
                .into_bytes()
        }),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..20_000).prop_map(|n| "[".repeat(n).into_bytes()),
    ];
    // Mostly well-formed bearer headers, so the token reaches the verifier.
    let scheme = select(vec![
        "Bearer ", "Bearer ", "Bearer ", "Bearer ", "bearer ", "BEARER ", "Bearer  ", "Basic ", "",
    ]);
    let auth = (scheme, token(valid.clone())).prop_map(|(s, t)| {
        let mut v = s.as_bytes().to_vec();
        v.extend(t);
        header_safe(v)
    });
    let (ticket_cookie, pass_cookie) = (format!("rg_ticket_{room}="), format!("rg_pass_{room}="));
    let both = (ticket_cookie.clone(), pass_cookie);
    let cookie = prop_oneof![
        token(valid.clone()).prop_map(move |t| {
            let mut v = ticket_cookie.clone().into_bytes();
            v.extend(t);
            header_safe(v)
        }),
        // A pass cookie next to a ticket cookie: the pass is checked before it is trusted.
        (token(valid.clone()), token(valid)).prop_map(move |(pass, ticket)| {
            let mut v = both.1.clone().into_bytes();
            v.extend(pass);
            v.extend(b"; ");
            v.extend(both.0.as_bytes());
            v.extend(ticket);
            header_safe(v)
        }),
        vec(any::<u8>(), 0..200).prop_map(header_safe),
    ];
    (
        target,
        proptest::option::of(body),
        proptest::option::of(select(vec![
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ])),
        proptest::option::of(auth),
        proptest::option::of(cookie),
    )
        .prop_map(|(target, body, content_type, auth, cookie)| Case {
            target,
            body,
            content_type,
            auth,
            cookie,
        })
}

/// Sends one case; `Err` describes a 5xx or an error answer that is not a problem.
async fn send(app: &TestApp, room: &str, case: Case) -> Result<(), String> {
    let (method, url) = match &case.target {
        Target::Join => (Method::POST, app.api(&format!("rooms/{room}/join"))),
        Target::Position => (Method::GET, app.api(&format!("rooms/{room}/position"))),
        Target::Leave => (Method::POST, app.api(&format!("rooms/{room}/leave"))),
        Target::Verify => (Method::POST, app.api("passes/verify")),
        Target::Path(p, m) => (m.clone(), app.api(&format!("rooms/{}", percent_encode(p)))),
    };
    let mut req = app.client.request(method.clone(), &url);
    if let Some(body) = &case.body {
        req = req.body(body.clone());
    }
    if let Some(ct) = case.content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    for (name, value) in [(AUTHORIZATION, &case.auth), (COOKIE, &case.cookie)] {
        if let Some(v) = value {
            let v = HeaderValue::from_bytes(v).map_err(|e| format!("bad header value: {e}"))?;
            req = req.header(name, v);
        }
    }
    let r = app.send(req).await;
    let status = r.status.as_u16();
    if status >= 500 {
        return Err(format!("{status} for {case:?}: {}", r.body));
    }
    if status >= 400 && method != Method::HEAD && !is_problem(&r) {
        return Err(format!(
            "{status} without a problem body for {case:?}: {}",
            r.body
        ));
    }
    if status < 300 && matches!(case.target, Target::Join | Target::Position) {
        let state = r.str("state");
        if !["waiting", "admitted", "expired", "closed"].contains(&state) {
            return Err(format!("{status} with state {state:?} for {case:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fuzz_never_yields_5xx_and_the_server_keeps_serving() {
    let (_redis, url) = store_url(StoreKind::Redis).await;
    let id = room_id();
    let other = room_id();
    let mut r = room(&id);
    r.max_active = 3;
    let app = spawn_app(config(url, vec![r, room(&other)])).await;

    // Genuine material to mutate: tickets of admitted and waiting shoppers, passes, and a
    // ticket and pass of another room.
    let mut valid = Vec::new();
    for i in 0..6 {
        let j = app.join(&id, Some(&format!("user-{i}")), None).await;
        assert!(j.status.is_success(), "{}", j.body);
        valid.push(j.str("ticket").to_string());
        if j.str("state") == "admitted" {
            valid.push(j.str("pass").to_string());
        }
    }
    let j = app.join(&other, None, None).await;
    valid.push(j.str("ticket").to_string());
    valid.push(j.str("pass").to_string());
    assert_eq!(valid.len(), 6 + 3 + 2, "three admitted, three waiting");

    let mut runner = TestRunner::deterministic();
    let strategy = case(id.clone(), valid.clone());
    let cases: Vec<Case> = (0..400)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("generate a case")
                .current()
        })
        .collect();
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|c| send(&app, &id, c))
        .buffer_unordered(8)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Garbage on the wire: hyper answers 400 or hangs up, never 5xx.
    let raw = prop_oneof![
        vec(any::<u8>(), 0..600),
        vec(any::<u8>(), 0..300).prop_map({
            let id = id.clone();
            move |tail| {
                let mut v = format!("POST /_rushgate/v1/rooms/{id}/join HTTP/1.1\r\nHost: x\r\n")
                    .into_bytes();
                v.extend(tail);
                v.extend(b"\r\n\r\n");
                v
            }
        }),
        ("[A-Z]{0,10}", "\\PC{0,100}", "[A-Z/0-9.]{0,10}").prop_map(|(m, p, v)| {
            format!("{m} /{p} {v}\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{}}").into_bytes()
        }),
    ];
    for _ in 0..40 {
        let bytes = raw.new_tree(&mut runner).expect("raw case").current();
        let reply = raw_http(&app.base, bytes.clone(), true).await;
        assert!(
            reply.status.is_none_or(|s| s < 500),
            "{:?} -> {}",
            String::from_utf8_lossy(&bytes),
            reply.text
        );
    }

    // Oversized request lines and headers, too many headers: refused by hyper, never 5xx.
    let huge_path = format!(
        "GET /_rushgate/v1/rooms/{}/position HTTP/1.1\r\nHost: x\r\n\r\n",
        "r".repeat(70_000)
    );
    let huge_cookie = format!(
        "GET /_rushgate/v1/rooms/{id}/position HTTP/1.1\r\nHost: x\r\nCookie: rg_ticket_{id}={}\r\n\r\n",
        "c".repeat(100_000)
    );
    let many_headers = format!(
        "POST /_rushgate/v1/rooms/{id}/join HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\n\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for request in [huge_path, huge_cookie, many_headers] {
        let reply = raw_http(&app.base, request.clone().into_bytes(), true).await;
        assert!(
            reply.status.is_none_or(|s| (400..500).contains(&s)),
            "{:.120} -> {}",
            request,
            reply.text
        );
    }

    // Still serving: a new shopper joins, a waiter polls, the probes are green.
    let fresh = app.join(&id, Some("after-the-storm"), None).await;
    assert!(fresh.status.is_success(), "{}", fresh.body);
    let polled = app.position(&id, fresh.str("ticket")).await;
    assert_eq!(polled.status.as_u16(), 200, "{}", polled.body);
    let status = app.status(&id).await;
    assert_eq!(status.status.as_u16(), 200, "{}", status.body);
    assert_eq!(app.admin_get("/livez").await.status.as_u16(), 200);
    assert_eq!(app.admin_get("/readyz").await.status.as_u16(), 200);
    app.stop().await;
}
