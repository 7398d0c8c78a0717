//! Webhooks from two nodes on one Redis: each event reaches the receiver exactly once, signed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::StatusCode;
use rushgate::config::{CouponConfig, SaleConfig, Secret, WebhookConfig};
use rushgate::webhooks::signature;
use serde_json::{json, Value};

use crate::harness::*;

pub const SECRET: &str = "webhook-secret-0123456789";

pub type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A receiver that records (event header, signature header, body) and answers 204.
pub async fn receiver() -> (String, Received) {
    let (url, got, _) = receiver_with(None).await;
    (url, got)
}

/// [`receiver`], over HTTPS with `tls`'s certificate (an `https://` url); also counts failed
/// TLS handshakes (a client that refused the certificate).
pub async fn receiver_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Received, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://localhost:{}/hooks",
        listener.local_addr().expect("addr").port()
    );
    let got: Received = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let sink = got.clone();
    let failures = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            let tls = tls.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let (event, sig) = (h("rushgate-event"), h("rushgate-signature"));
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        // Check the signature against the raw body here, where we still have it.
                        let t: u64 = sig
                            .strip_prefix("t=")
                            .and_then(|r| r.split(',').next())
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let valid = signature(SECRET.as_bytes(), t, &body) == sig;
                        sink.lock().expect("lock").push((
                            event,
                            if valid { "valid".into() } else { sig },
                            value,
                        ));
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .status(204)
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
                match tls {
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    }
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                }
            });
        }
    });
    (url, got, refused)
}

pub fn count(got: &Received, event: &str) -> usize {
    got.lock()
        .expect("lock")
        .iter()
        .filter(|(e, _, _)| e == event)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_with_a_valid_signature_from_two_nodes() {
    let redis = RedisServer::start().await;
    let (url, got) = receiver().await;
    let (room_id, sale_id, campaign) = (room_id(), room_id(), room_id());
    let make = || {
        let mut c = config(Some(redis.url()), vec![room(&room_id)]);
        c.sales = vec![SaleConfig::with_ids(&sale_id, &room_id, 1)];
        c.coupons = vec![CouponConfig {
            id: campaign.clone(),
            limit: 1,
            room: None,
        }];
        c.shop.api_key = Secret("shop-key-0123456789".into());
        c.webhooks = vec![WebhookConfig {
            url: url.clone(),
            ca_file: None,
            events: [
                "sale.sold_out",
                "sale.restocked",
                "room.paused",
                "coupon.exhausted",
            ]
            .map(String::from)
            .to_vec(),
            secret: Secret(SECRET.into()),
        }];
        c
    };
    let a = spawn_app(make()).await;
    let b = spawn_app(make()).await;
    for app in [&a, &b] {
        app.wait_sales_read().await;
    }

    // Sell the only unit and confirm it: sold out, seen by both nodes' keepers.
    let joined = a.join(&room_id, Some("buyer"), None).await;
    let r = a
        .send(
            a.client
                .post(a.api(&format!("sales/{sale_id}/purchase")))
                .bearer_auth(joined.str("pass"))
                .json(&json!({"quantity": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rid = r.str("reservation_id").to_string();
    let r = b
        .send(
            b.client
                .post(b.api(&format!("reservations/{rid}/confirm")))
                .bearer_auth("shop-key-0123456789"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    wait_until(Duration::from_secs(5), "sale.sold_out arrives", || async {
        count(&got, "sale.sold_out") >= 1
    })
    .await;

    // Restock through the store; pause through node b's admin API; exhaust the coupons on node a.
    let store = a.app.as_ref().expect("running").state.sale_store.clone();
    store
        .add_stock(&typed_sale(&sale_id), 5, rushgate::clock::now_ms())
        .await
        .expect("restock");
    wait_until(Duration::from_secs(5), "sale.restocked arrives", || async {
        count(&got, "sale.restocked") >= 1
    })
    .await;
    let r = b
        .send(
            b.client
                .post(format!("{}/admin/v1/rooms/{room_id}/pause", b.admin)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a
        .send(
            a.client
                .post(a.api(&format!("coupons/{campaign}/claim")))
                .json(&json!({"user": "u1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    wait_until(
        Duration::from_secs(5),
        "room.paused and coupon.exhausted arrive",
        || async { count(&got, "room.paused") >= 1 && count(&got, "coupon.exhausted") >= 1 },
    )
    .await;

    // Both keepers have refreshed many more times since: still exactly one of each.
    for _ in 0..5 {
        a.settle(&room_id).await;
        b.settle(&room_id).await;
    }
    for event in [
        "sale.sold_out",
        "sale.restocked",
        "room.paused",
        "coupon.exhausted",
    ] {
        assert_eq!(
            count(&got, event),
            1,
            "{event}: {:?}",
            got.lock().expect("lock")
        );
    }
    for (event, sig, body) in got.lock().expect("lock").iter() {
        assert_eq!(sig, "valid", "{event} signature");
        assert_eq!(body["type"], event.as_str());
        assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    let sold_out = got
        .lock()
        .expect("lock")
        .iter()
        .find(|(e, _, _)| e == "sale.sold_out")
        .map(|(_, _, b)| b.clone());
    assert_eq!(sold_out.expect("event")["data"]["sale"], sale_id.as_str());
    a.stop().await;
    b.stop().await;
}

/// A scheduled room announces its pre-queue and its opening once, though both nodes see them,
/// each with the seed commitment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_room_announces_prequeue_and_opening_once() {
    let redis = RedisServer::start().await;
    let (url, got) = receiver().await;
    let id = room_id();
    let now = time::OffsetDateTime::now_utc();
    let make = || {
        let mut r = room(&id);
        r.prequeue_opens_at = Some(now + time::Duration::milliseconds(1_500));
        r.opens_at = Some(now + time::Duration::milliseconds(3_000));
        let mut c = config(Some(redis.url()), vec![r]);
        c.webhooks = vec![WebhookConfig {
            url: url.clone(),
            ca_file: None,
            events: ["room.prequeue_opened", "room.opened"]
                .map(String::from)
                .to_vec(),
            secret: Secret(SECRET.into()),
        }];
        c
    };
    let a = spawn_app(make()).await;
    let b = spawn_app(make()).await;
    wait_until(
        Duration::from_secs(10),
        "both announcements arrive",
        || async { count(&got, "room.prequeue_opened") >= 1 && count(&got, "room.opened") >= 1 },
    )
    .await;
    for _ in 0..5 {
        a.settle(&id).await;
        b.settle(&id).await;
    }
    assert_eq!(count(&got, "room.prequeue_opened"), 1);
    assert_eq!(count(&got, "room.opened"), 1);
    let opened = got
        .lock()
        .expect("lock")
        .iter()
        .find(|(e, _, _)| e == "room.opened")
        .map(|(_, sig, body)| (sig.clone(), body.clone()))
        .expect("opened");
    assert_eq!(opened.0, "valid");
    assert_eq!(opened.1["data"]["room"], id.as_str());
    assert!(opened.1["data"]["seed_sha256"].is_string(), "{}", opened.1);
    // The pre-queue's announcement already carries the commitment (the seed is committed as the
    // pre-queue opens), and it is the same one the opening publishes.
    let prequeue = got
        .lock()
        .expect("lock")
        .iter()
        .find(|(e, _, _)| e == "room.prequeue_opened")
        .map(|(_, _, body)| body.clone())
        .expect("prequeue opened");
    assert!(prequeue["data"]["seed_sha256"].is_string(), "{prequeue}");
    assert_eq!(
        prequeue["data"]["seed_sha256"], opened.1["data"]["seed_sha256"],
        "{prequeue}"
    );
    a.stop().await;
    b.stop().await;
}

/// Webhooks over HTTPS: a receiver whose certificate comes from the hook's `ca_file` gets the
/// event, signed; a receiver the hook cannot verify (another CA) is never sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_verified() {
    let (trusted, stranger) = (
        crate::certs::Certs::generate(),
        crate::certs::Certs::generate(),
    );
    let (good_url, good, _) = receiver_with(Some(trusted.acceptor())).await;
    let (bad_url, bad, refused) = receiver_with(Some(stranger.acceptor())).await;
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    let hook = |url: &str| WebhookConfig {
        url: url.to_string(),
        ca_file: Some(trusted.ca.clone()),
        events: vec!["room.paused".into()],
        secret: Secret(SECRET.into()),
    };
    c.webhooks = vec![hook(&good_url), hook(&bad_url)];
    let app = spawn_app(c).await;
    let paused = app
        .send(
            app.client
                .post(format!("{}/admin/v1/rooms/{id}/pause", app.admin)),
        )
        .await;
    assert!(paused.status.is_success(), "{}", paused.body);
    wait_until(
        Duration::from_secs(10),
        "the trusted receiver gets the event",
        || async { count(&good, "room.paused") == 1 },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the other receiver's certificate is refused",
        || async { refused.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    let first = good.lock().expect("lock")[0].clone();
    assert_eq!(first.1, "valid");
    assert_eq!(first.2["data"]["room"], id.as_str());
    assert!(bad.lock().expect("lock").is_empty());
    app.stop().await;
}
