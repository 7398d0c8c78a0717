//! TLS at both ends of the proxy: rushgate's public listener serving HTTPS (HTTP/1.1 and HTTP/2
//! by ALPN) with a certificate the test makes, a certificate reload that new connections use
//! while an open one finishes, and HTTPS shops behind a protected path (verified against a test
//! CA; one whose certificate does not verify gets 502).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rushgate::config::{ListenerTls, SaleConfig, Secret};
use serde_json::{json, Value};

use super::upstream::Upstream;
use super::{proxied_room, shopper};
use crate::certs::Certs;
use crate::harness::{self, wait_until, TestApp};

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

const SHOP_KEY: &str = "tls-test-shop-key-0123456789";

/// A client trusting only `ca`, speaking HTTP/2 (by ALPN) or HTTP/1.1 only.
fn client(ca: &Path, h2: bool) -> Https {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Certs::client_trusting(ca))
        .https_only();
    let connector = if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2).pool_idle_timeout(Duration::from_secs(30));
    b.build(connector)
}

/// An answer: status, protocol, headers, JSON body (`Null` when not JSON) and raw text.
struct Answer {
    status: StatusCode,
    version: Version,
    headers: http::HeaderMap,
    json: Value,
    text: String,
}

async fn call(
    client: &Https,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let resp = client
        .request(req.body(body).expect("request"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (status, version, headers) = (resp.status(), resp.version(), resp.headers().clone());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        version,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Join → poll until admitted → the protected page through the proxy → a purchase, all over
/// HTTPS with `client`; checks the protocol each answer came in and the `Secure` cookies.
async fn whole_flow(client: &Https, base: &str, room: &str, sale: &str, version: Version) {
    let api = |p: &str| format!("{base}/_rushgate/v1/{p}");
    let joined = call(
        client,
        Method::POST,
        &api(&format!("rooms/{room}/join")),
        &[("accept", "application/json")],
        None,
    )
    .await
    .expect("join");
    assert!(joined.status.is_success(), "{}", joined.text);
    assert_eq!(joined.version, version);
    let cookies: Vec<&str> = joined
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        !cookies.is_empty() && cookies.iter().all(|c| c.contains("; Secure")),
        "cookies over HTTPS are Secure: {cookies:?}"
    );
    let ticket = joined.json["ticket"].as_str().expect("ticket").to_string();
    let bearer = format!("Bearer {ticket}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pass = loop {
        let polled = call(
            client,
            Method::GET,
            &api(&format!("rooms/{room}/position")),
            &[("authorization", &bearer)],
            None,
        )
        .await
        .expect("poll");
        assert_eq!(polled.status, StatusCode::OK, "{}", polled.text);
        if let Some(pass) = polled.json["pass"].as_str().filter(|p| !p.is_empty()) {
            break pass.to_string();
        }
        assert!(Instant::now() < deadline, "not admitted: {}", polled.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cookie = format!("rg_pass_{room}={pass}");
    let page = call(
        client,
        Method::GET,
        &format!("{base}/products/drop"),
        &[("cookie", &cookie)],
        None,
    )
    .await
    .expect("proxied page");
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.version, version);
    assert_eq!(page.text, "upstream:/products/drop");
    let bought = call(
        client,
        Method::POST,
        &api(&format!("sales/{sale}/purchase")),
        &[("authorization", &format!("Bearer {pass}"))],
        Some(json!({ "quantity": 1 })),
    )
    .await
    .expect("purchase");
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.text);
    assert_eq!(bought.version, version);
}

/// Copies a server certificate and key into the files rushgate reads.
fn install(certs: &Certs, cert: &Path, key: &Path) {
    std::fs::copy(&certs.server_cert, cert).expect("copy cert");
    std::fs::copy(&certs.server_key, key).expect("copy key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_http1_and_h2_and_a_reloaded_certificate_reaches_new_connections() {
    let (first, second) = (Certs::generate(), Certs::generate());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls-key.pem"));
    install(&first, &cert, &key);
    let up = Upstream::start().await;
    let room = harness::room_id();
    let sale = harness::room_id();
    let mut config = harness::config(None, vec![proxied_room(&room, &up.url())]);
    config.sales = vec![SaleConfig::with_ids(&sale, &room, 10)];
    config.shop.api_key = Secret(SHOP_KEY.into());
    config.server.tls = Some(ListenerTls {
        cert_file: cert.clone(),
        key_file: key.clone(),
    });
    let (app, _path) = harness::spawn_app_from_file(config, dir.path()).await;
    app.wait_sales_read().await;
    let port = app.app.as_ref().unwrap().public_addr.port();
    // The certificate names 127.0.0.1 and localhost.
    let base = format!("https://localhost:{port}");

    let h1 = client(&first.ca, false);
    let h2 = client(&first.ca, true);
    whole_flow(&h1, &base, &room, &sale, Version::HTTP_11).await;
    whole_flow(&h2, &base, &room, &sale, Version::HTTP_2).await;
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/_rushgate/v1/rooms/{room}"))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP is refused"
    );

    // A new certificate from another CA: new connections get it, the open ones keep theirs.
    install(&second, &cert, &key);
    let reloaded = app
        .send(app.client.post(format!("{}/admin/v1/reload", app.admin)))
        .await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.body);
    assert_eq!(
        reloaded.body["report"]["certificate_reloaded"], true,
        "{}",
        reloaded.body
    );
    let fresh = client(&second.ca, false);
    whole_flow(&fresh, &base, &room, &sale, Version::HTTP_11).await;
    let refused = call(
        &client(&first.ca, false),
        Method::GET,
        &format!("{base}/_rushgate/v1/rooms/{room}"),
        &[],
        None,
    )
    .await;
    let error = refused
        .err()
        .expect("a client trusting only the old CA is refused");
    assert!(error.contains("InvalidCertificate"), "{error}");
    // The HTTP/2 client's connection (opened before the reload) is still served.
    let old = call(
        &h2,
        Method::GET,
        &format!("{base}/_rushgate/v1/rooms/{room}"),
        &[],
        None,
    )
    .await
    .expect("the open connection finishes its work");
    assert_eq!(old.status, StatusCode::OK, "{}", old.text);

    // A certificate file that does not load refuses the reload and keeps the one in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    let refused = app
        .send(app.client.post(format!("{}/admin/v1/reload", app.admin)))
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    assert!(
        refused.body.to_string().contains("server.tls"),
        "{}",
        refused.body
    );
    let still = call(
        &client(&second.ca, false),
        Method::GET,
        &format!("{base}/_rushgate/v1/rooms/{room}"),
        &[],
        None,
    )
    .await
    .expect("still serving the second certificate");
    assert_eq!(still.status, StatusCode::OK);
    app.stop().await;
}

/// A rushgate in front of an HTTPS shop whose certificate comes from `certs`' CA; the room
/// trusts `trust` (a CA file) or the system's roots.
async fn https_shop(certs: &Certs, trust: Option<&Path>) -> (Upstream, TestApp, String) {
    let up = Upstream::start_with(Some(certs.acceptor())).await;
    let room = harness::room_id();
    let mut r = proxied_room(&room, &up.url());
    r.upstream_ca_file = trust.map(Path::to_path_buf);
    let app = harness::spawn_app(harness::config(None, vec![r])).await;
    (up, app, room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_shop_is_verified_and_one_that_does_not_verify_gets_502() {
    let certs = Certs::generate();
    let (up, app, room) = https_shop(&certs, Some(&certs.ca)).await;
    assert!(up.url().starts_with("https://"));
    let state = &app.app.as_ref().unwrap().state;
    up.set_verifier(state.passes.clone(), &room);
    let browser = shopper();
    // A pass, as admission hands it out (the room admits at once).
    let joined = app.join(&room, None, None).await;
    let ticket = joined.str("ticket").to_string();
    let pass = loop {
        let p = app.position(&room, &ticket).await;
        if !p.str("pass").is_empty() {
            break p.str("pass").to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let page = browser
        .get(format!("{}/products/x?q=1", app.base))
        .header("cookie", format!("rg_pass_{room}={pass}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.text().await.unwrap(), "upstream:/products/x?q=1");
    // Kept-alive: more requests reuse the TLS connection.
    for i in 0..20 {
        let r = browser
            .get(format!("{}/style{i}.css", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(up.bad_passes(), 0);
    assert!(up.connections() <= 2, "{} connections", up.connections());
    let seen = up.seen();
    assert_eq!(seen[0].pass_sub.as_deref().map(str::is_empty), Some(false));
    app.stop().await;

    // The same shop, trusted with the wrong CA, and with only the system's roots: 502, and
    // no request reaches it.
    for trust in [Some(certs.other_ca.as_path()), None] {
        let (up, app, _room) = https_shop(&certs, trust).await;
        let r = shopper()
            .get(format!("{}/style.css", app.base))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let body: Value = r.json().await.unwrap();
        assert!(
            body.to_string().contains("TLS certificate did not verify"),
            "{body}"
        );
        assert!(up.seen().is_empty());
        // The shop's side of the refused handshake ends just after rushgate's answer.
        wait_until(
            Duration::from_secs(5),
            "the shop saw the handshake refused",
            || async {
                up.shared
                    .tls_failures
                    .load(std::sync::atomic::Ordering::SeqCst)
                    >= 1
            },
        )
        .await;
        let metrics = app.metrics_text().await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("rushgate_proxy_upstream_errors_total")
                    && l.contains("kind=\"tls\"")),
            "{metrics}"
        );
        app.stop().await;
    }
}
