//! Every bad input over real HTTP gets its status and a complete `application/problem+json` body,
//! and changes nothing: the room's `waiting`, `active` and `last_number` stay as they were.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, COOKIE};
use reqwest::{Method, RequestBuilder};
use rushgate::config::PassAlgorithm;
use rushgate::http::AppState;
use rushgate::pass::{PassClaims, PassIssuer, PassKeys, TicketClaims, TicketSigner};
use serde_json::{json, Value};

use super::{assert_problem, now_secs, raw_http};
use crate::both_stores;
use crate::harness::*;

/// `(waiting, active, last_number)` once the node has certainly read the store after the last
/// request (two refreshes: the first may have started before the request finished).
async fn counts(app: &TestApp, id: &str) -> (u64, u64, u64) {
    app.settle(id).await;
    app.settle(id).await;
    let s = app.status(id).await;
    assert_eq!(s.status.as_u16(), 200, "{}", s.body);
    (s.u64("waiting"), s.u64("active"), s.u64("last_number"))
}

struct Fixture {
    app: TestApp,
    /// The room under test: one admitted shopper, two waiting.
    id: String,
    baseline: (u64, u64, u64),
}

impl Fixture {
    fn state(&self) -> &AppState {
        &self.app.app.as_ref().expect("running").state
    }

    fn room_url(&self, tail: &str) -> String {
        self.app.api(&format!("rooms/{}{tail}", self.id))
    }

    /// Sends `req`, asserts the problem, then asserts the room did not change.
    async fn rejected(&self, label: &str, req: RequestBuilder, status: u16, slug: &str) -> Reply {
        let r = self.app.send(req).await;
        assert_problem(&r, status, slug, label);
        assert_eq!(
            counts(&self.app, &self.id).await,
            self.baseline,
            "{label}: a rejected request changed the room"
        );
        r
    }

    fn position(&self) -> RequestBuilder {
        self.app.client.get(self.room_url("/position"))
    }

    fn join(&self) -> RequestBuilder {
        self.app.client.post(self.room_url("/join"))
    }

    fn leave(&self) -> RequestBuilder {
        self.app.client.post(self.room_url("/leave"))
    }

    fn verify(&self) -> RequestBuilder {
        self.app.client.post(self.app.api("passes/verify"))
    }
}

/// `token` with the first character of its last dot-separated part replaced.
fn tamper_last_part(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').expect("dotted token");
    let first = sig.chars().next().expect("non-empty signature");
    let other = if first == 'A' { 'B' } else { 'A' };
    format!("{head}.{other}{}", &sig[first.len_utf8()..])
}

/// A pass whose payload was edited (keeping the original signature).
fn tamper_payload(pass: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = pass.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWT");
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    edit(&mut payload);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).expect("json"));
    format!("{}.{payload}.{}", parts[0], parts[2])
}

both_stores!(bad_input_is_a_problem_and_changes_nothing);
async fn bad_input_is_a_problem_and_changes_nothing(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let other = room_id();
    let mut r = room(&id);
    r.max_active = 1;
    let app = spawn_app(config(url, vec![r, room(&other)])).await;

    // One admitted shopper, then two waiters; a ticket and a pass of another room.
    let first = app.join(&id, None, None).await;
    assert_eq!(first.str("state"), "admitted", "{}", first.body);
    let pass = first.str("pass").to_string();
    let alice = app.join(&id, Some("alice"), None).await;
    assert_eq!(alice.str("state"), "waiting", "{}", alice.body);
    let alice_ticket = alice.str("ticket").to_string();
    let second = app.join(&id, None, None).await;
    assert_eq!(second.u64("position"), 2, "{}", second.body);
    let elsewhere = app.join(&other, None, None).await;
    assert_eq!(elsewhere.str("state"), "admitted", "{}", elsewhere.body);
    let other_ticket = elsewhere.str("ticket").to_string();
    let other_pass = elsewhere.str("pass").to_string();

    let baseline = counts(&app, &id).await;
    assert_eq!((baseline.0, baseline.1), (2, 1), "setup: {baseline:?}");
    let f = Fixture {
        app,
        id: id.clone(),
        baseline,
    };
    let tickets = f.state().tickets.clone();
    let passes = f.state().passes.clone();
    let alice_claims = tickets
        .verify(&alice_ticket)
        .expect("alice's ticket verifies");

    // ---- unknown room, unknown endpoint, wrong method --------------------------------------
    let nosuch = f.app.api("rooms/nosuch-room");
    f.rejected(
        "status of unknown room",
        f.app.client.get(&nosuch),
        404,
        "unknown-room",
    )
    .await;
    f.rejected(
        "join unknown room",
        f.app
            .client
            .post(format!("{nosuch}/join"))
            .json(&json!({"user": "alice"})),
        404,
        "unknown-room",
    )
    .await;
    f.rejected(
        "position in unknown room",
        f.app
            .client
            .get(format!("{nosuch}/position"))
            .bearer_auth(&alice_ticket),
        404,
        "unknown-room",
    )
    .await;
    f.rejected(
        "leave unknown room",
        f.app
            .client
            .post(format!("{nosuch}/leave"))
            .bearer_auth(&alice_ticket),
        404,
        "unknown-room",
    )
    .await;
    let long = f
        .rejected(
            "join a 2000-character room id",
            f.app
                .client
                .post(f.app.api(&format!("rooms/{}/join", "r".repeat(2000)))),
            404,
            "unknown-room",
        )
        .await;
    assert!(
        long.body["detail"].as_str().unwrap().len() < 200,
        "detail echoes the whole id: {}",
        long.body
    );
    f.rejected(
        "join a percent-encoded room id",
        f.app.client.post(f.app.api("rooms/%00%FF%2F../join")),
        404,
        "*",
    )
    .await;
    f.rejected(
        "unknown endpoint",
        f.app.client.get(f.app.api("nothing/here")),
        404,
        "not-found",
    )
    .await;
    f.rejected(
        "outside the API",
        f.app.client.get(format!("{}/index.html", f.app.base)),
        404,
        "not-found",
    )
    .await;
    for (method, url, allow) in [
        (Method::DELETE, f.room_url("/join"), "POST"),
        (Method::GET, f.room_url("/leave"), "POST"),
        (Method::POST, f.room_url(""), "GET"),
        (Method::PUT, f.room_url("/position"), "GET"),
        (Method::GET, f.app.api("passes/verify"), "POST"),
        (
            Method::POST,
            format!("{}/.well-known/jwks.json", f.app.base),
            "GET",
        ),
    ] {
        let label = format!("{method} {url}");
        let r = f
            .rejected(
                &label,
                f.app.client.request(method.clone(), &url),
                405,
                "method-not-allowed",
            )
            .await;
        assert_eq!(
            r.headers.get(ALLOW).and_then(|v| v.to_str().ok()),
            Some(allow),
            "{label}"
        );
    }

    // ---- malformed JSON on join ------------------------------------------------------------
    for (label, body) in [
        ("truncated object", br#"{"user":"#.to_vec()),
        ("not JSON", b"user=alice".to_vec()),
        ("user is a number", br#"{"user": 5}"#.to_vec()),
        (
            "user is an object",
            br#"{"user": {"id": "alice"}}"#.to_vec(),
        ),
        ("a string", br#""alice""#.to_vec()),
        ("null", b"null".to_vec()),
        ("empty array", b"[]".to_vec()),
        ("invalid UTF-8", b"{\"user\": \"\xff\xfe\"}".to_vec()),
        ("byte order mark", b"\xef\xbb\xbf{}".to_vec()),
        ("trailing garbage", br#"{"user": "alice"} x"#.to_vec()),
        ("deep nesting", "[".repeat(5000).into_bytes()),
    ] {
        f.rejected(
            &format!("join with {label}"),
            f.join().header(CONTENT_TYPE, "application/json").body(body),
            400,
            "malformed-json",
        )
        .await;
    }
    // A malformed body is refused even with alice's valid ticket, and alice keeps her place.
    f.rejected(
        "join with alice's ticket and a malformed body",
        f.join().bearer_auth(&alice_ticket).body("{"),
        400,
        "malformed-json",
    )
    .await;

    // ---- body size ---------------------------------------------------------------------------
    let big_user = json!({ "user": "a".repeat(17 * 1024) }).to_string();
    f.rejected(
        "join with a 17 KiB body",
        f.join()
            .header(CONTENT_TYPE, "application/json")
            .body(big_user),
        413,
        "body-too-large",
    )
    .await;
    f.rejected(
        "verify with a 64 KiB body",
        f.verify().json(&json!({ "token": "a".repeat(64 * 1024) })),
        413,
        "body-too-large",
    )
    .await;
    // Exactly at the limit is read (and then refused for the over-long user key, not the size).
    let prefix = r#"{"user":""#;
    let at_limit = format!("{prefix}{}\"}}", "b".repeat(16 * 1024 - prefix.len() - 2));
    assert_eq!(at_limit.len(), 16 * 1024);
    f.rejected(
        "join with a body of exactly 16 KiB",
        f.join().body(at_limit),
        400,
        "invalid-field",
    )
    .await;
    // Without Content-Length (chunked), the limit holds while reading.
    for path in [format!("rooms/{id}/join"), "passes/verify".to_string()] {
        let mut req = format!(
            "POST /_rushgate/v1/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..17 {
            req.extend_from_slice(b"400\r\n");
            req.extend_from_slice(&[b' '; 1024]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let raw = raw_http(&f.app.base, req, false).await;
        assert_eq!(raw.status, Some(413), "chunked {path}: {}", raw.text);
        assert_eq!(
            raw.header("content-type").as_deref(),
            Some("application/problem+json"),
            "chunked {path}"
        );
        let body: Value = serde_json::from_str(raw.body()).expect("problem body");
        assert_eq!(body["status"], 413, "{body}");
        for field in ["type", "title", "detail"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
        assert_eq!(counts(&f.app, &id).await, f.baseline, "chunked {path}");
    }
    // A broken chunked encoding is a client error too.
    let broken = format!(
        "POST /_rushgate/v1/rooms/{id}/join HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n5\r\n{{\"use\r\nzz\r\n\r\n"
    );
    let raw = raw_http(&f.app.base, broken.into_bytes(), false).await;
    assert!(
        raw.status.is_some_and(|s| (400..500).contains(&s)),
        "broken chunks: {}",
        raw.text
    );
    if raw.header("content-type").is_some() {
        assert_eq!(
            raw.header("content-type").as_deref(),
            Some("application/problem+json"),
            "broken chunks: {}",
            raw.text
        );
    }
    assert_eq!(counts(&f.app, &id).await, f.baseline, "broken chunks");

    // ---- missing ticket ----------------------------------------------------------------------
    f.rejected(
        "position without ticket",
        f.position(),
        401,
        "missing-ticket",
    )
    .await;
    f.rejected("leave without ticket", f.leave(), 401, "missing-ticket")
        .await;
    f.rejected(
        "position with Basic auth only",
        f.position().basic_auth("alice", Some("pw")),
        401,
        "missing-ticket",
    )
    .await;
    f.rejected(
        "position with another room's ticket cookie name",
        f.position()
            .header(COOKIE, format!("rg_ticket_{other}={other_ticket}")),
        401,
        "missing-ticket",
    )
    .await;
    f.rejected(
        "position with a non-UTF-8 bearer",
        f.position().header(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        ),
        401,
        "*",
    )
    .await;

    // ---- forged tickets ----------------------------------------------------------------------
    let resign = |c: &TicketClaims| tickets.sign(c);
    let forged: Vec<(&str, String)> = vec![
        ("tampered signature", tamper_last_part(&alice_ticket)),
        ("tampered seq (queue jump)", {
            let mut parts: Vec<String> = alice_ticket.split('.').map(str::to_string).collect();
            parts[2] = "1".into();
            parts.join(".")
        }),
        ("tampered identity", {
            let mut parts: Vec<String> = alice_ticket.split('.').map(str::to_string).collect();
            parts[1] = "aAAAAAAAAAAAAAAA".into();
            parts.join(".")
        }),
        ("ticket of another room", other_ticket.clone()),
        ("signed with another secret", {
            TicketSigner::new(b"some-other-secret-entirely").sign(&alice_claims)
        }),
        ("expired (25 h old)", {
            let mut c = alice_claims.clone();
            c.iat = now_secs() - 25 * 3600;
            resign(&c)
        }),
        ("garbage", "garbage".into()),
        ("only dots", ".....".into()),
        ("too long", "a".repeat(300)),
        ("a pass instead of a ticket", pass.clone()),
    ];
    for (label, token) in &forged {
        f.rejected(
            &format!("position, {label}"),
            f.position().bearer_auth(token),
            401,
            "invalid-ticket",
        )
        .await;
        f.rejected(
            &format!("position cookie, {label}"),
            f.position()
                .header(COOKIE, format!("rg_ticket_{id}={token}")),
            401,
            "invalid-ticket",
        )
        .await;
        f.rejected(
            &format!("join with bearer, {label}"),
            f.join().bearer_auth(token),
            401,
            "invalid-ticket",
        )
        .await;
        f.rejected(
            &format!("leave, {label}"),
            f.leave().bearer_auth(token),
            401,
            "invalid-ticket",
        )
        .await;
    }
    let wrong_room = f
        .rejected(
            "detail names the other room",
            f.position().bearer_auth(&other_ticket),
            401,
            "invalid-ticket",
        )
        .await;
    assert!(
        wrong_room.body["detail"].as_str().unwrap().contains(&other),
        "{}",
        wrong_room.body
    );

    // ---- passes/verify -----------------------------------------------------------------------
    for (label, body) in [
        ("truncated object", br#"{"token":"#.to_vec()),
        ("empty body", Vec::new()),
        ("no token field", b"{}".to_vec()),
        ("token is a number", br#"{"token": 5}"#.to_vec()),
        ("token is null", br#"{"token": null}"#.to_vec()),
        ("not JSON", pass.clone().into_bytes()),
        ("invalid UTF-8", b"{\"token\": \"\xc3\x28\"}".to_vec()),
    ] {
        f.rejected(
            &format!("verify with {label}"),
            f.verify()
                .header(CONTENT_TYPE, "application/json")
                .body(body),
            400,
            "malformed-json",
        )
        .await;
    }
    let now = now_secs();
    let genuine = passes
        .verify(&pass)
        .expect("the first shopper's pass verifies");
    let stranger = |alg| {
        let pem = PassKeys::generate_pem(alg).unwrap();
        PassIssuer::new(PassKeys::from_pem(&pem, alg).unwrap(), "rushgate", "shop")
    };
    let with = |edit: fn(&mut PassClaims)| {
        let mut c = PassClaims::clone(&genuine);
        edit(&mut c);
        passes.issue_claims(&c).unwrap()
    };
    let bad_passes: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            passes
                .issue(&id, &genuine.sub, 1, now - 1200, now - 600)
                .unwrap(),
            "expired",
        ),
        ("not yet valid", with(|c| c.nbf += 3600), "not yet valid"),
        (
            "wrong audience",
            with(|c| c.aud = "other-shop".into()),
            "audience",
        ),
        ("wrong issuer", with(|c| c.iss = "evil".into()), "audience"),
        (
            "signed by another Ed25519 key",
            stranger(PassAlgorithm::EdDSA)
                .issue_claims(&genuine)
                .unwrap(),
            "signature",
        ),
        (
            "signed by a P-256 key",
            stranger(PassAlgorithm::ES256)
                .issue_claims(&genuine)
                .unwrap(),
            "signature",
        ),
        (
            "tampered payload (other room)",
            tamper_payload(&pass, |p| p["room"] = json!(other)),
            "signature",
        ),
        (
            "tampered payload (longer session)",
            tamper_payload(&pass, |p| p["exp"] = json!(now + 86_400)),
            "signature",
        ),
        ("tampered signature", tamper_last_part(&pass), "*"),
        (
            "alg none",
            {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
                let payload = pass.split('.').nth(1).unwrap();
                format!("{header}.{payload}.")
            },
            "*",
        ),
        ("garbage", "garbage".into(), "malformed"),
        ("empty", String::new(), "malformed"),
        ("a ticket", alice_ticket.clone(), "malformed"),
        ("8 KiB of base64", "QUFB".repeat(2048), "malformed"),
    ];
    for (label, token, detail) in &bad_passes {
        let r = f
            .rejected(
                &format!("verify pass: {label}"),
                f.verify().json(&json!({ "token": token })),
                401,
                "invalid-pass",
            )
            .await;
        if *detail != "*" {
            assert!(
                r.body["detail"].as_str().unwrap().contains(detail),
                "{label}: {}",
                r.body
            );
        }
    }
    // The genuine passes of both rooms still verify (and verifying changes nothing).
    for p in [&pass, &other_pass] {
        let ok = f.app.send(f.verify().json(&json!({ "token": p }))).await;
        assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
        assert_eq!(ok.body["valid"], true);
    }

    // ---- the user key ------------------------------------------------------------------------
    for (label, user) in [
        ("empty", String::new()),
        ("blank", "   \t ".to_string()),
        ("257 characters", "u".repeat(257)),
        ("1000 characters", "u".repeat(1000)),
    ] {
        let r = f
            .rejected(
                &format!("join with a {label} user"),
                f.join().json(&json!({ "user": user })),
                400,
                "invalid-field",
            )
            .await;
        assert!(
            r.body["detail"].as_str().unwrap().contains("user"),
            "{}",
            r.body
        );
    }
    // An invalid user key is refused even next to alice's valid ticket.
    f.rejected(
        "join with an empty user and alice's ticket",
        f.join()
            .bearer_auth(&alice_ticket)
            .json(&json!({ "user": "" })),
        400,
        "invalid-field",
    )
    .await;

    // ---- the server still answers, and nobody lost a place ------------------------------------
    assert_eq!(counts(&f.app, &id).await, f.baseline);
    let polled = f.app.position(&id, &alice_ticket).await;
    assert_eq!(polled.status.as_u16(), 200, "{}", polled.body);
    assert_eq!(polled.str("state"), "waiting");
    assert_eq!(polled.u64("position"), 1);
    let again = f.app.join(&id, Some("alice"), None).await;
    assert_eq!(again.status.as_u16(), 200, "{}", again.body);
    assert_eq!(again.u64("position"), 1);
    let carol = f.app.join(&id, Some("carol"), None).await;
    assert_eq!(carol.status.as_u16(), 201, "{}", carol.body);
    assert_eq!(carol.u64("position"), 3);
    let (waiting, _, last) = counts(&f.app, &id).await;
    assert_eq!((waiting, last), (f.baseline.0 + 1, f.baseline.2 + 1));
    let admin_404 = f.app.admin_get("/nothing").await;
    assert_problem(&admin_404, 404, "not-found", "admin listener, unknown path");
    assert_eq!(f.app.admin_get("/livez").await.status.as_u16(), 200);
    assert_eq!(f.app.admin_get("/readyz").await.status.as_u16(), 200);
    f.app.stop().await;
}
