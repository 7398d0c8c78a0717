//! Rate limits over HTTP: one client over its budget gets 429 with `Retry-After`, others are
//! unaffected; the client address comes from `X-Forwarded-For` only behind a trusted proxy.

use reqwest::StatusCode;
use rushgate::config::LimitsConfig;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_over_its_limit_gets_429_others_do_not() {
    let id = room_id();
    let mut c = config(None, vec![room(&id)]);
    c.limits = LimitsConfig {
        join_per_minute: 6,
        join_burst: 5,
        ..LimitsConfig::default()
    };
    c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    let app = spawn_app(c).await;
    let join_from = |ip: &'static str| {
        app.send(
            app.client
                .post(app.api(&format!("rooms/{id}/join")))
                .header("x-forwarded-for", ip),
        )
    };
    for _ in 0..5 {
        assert!(join_from("203.0.113.7").await.status.is_success());
    }
    let limited = join_from("203.0.113.7").await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.headers["content-type"], "application/problem+json");
    assert!(limited.str("type").ends_with("/rate-limited"));
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Other clients, including one behind the same proxy, keep their own budgets.
    for ip in ["203.0.113.8", "198.51.100.1", "2001:db8::1"] {
        let r = join_from(ip).await;
        assert!(r.status.is_success(), "{ip}: {}", r.body);
    }
    let mut c = config(None, vec![room(&id)]);
    c.limits = LimitsConfig {
        join_per_minute: 6,
        join_burst: 1,
        ..LimitsConfig::default()
    };
    let untrusted = spawn_app(c).await;
    // Without a trusted proxy, X-Forwarded-For is ignored: spoofed addresses share the peer's budget.
    let first = untrusted
        .send(
            untrusted
                .client
                .post(untrusted.api(&format!("rooms/{id}/join")))
                .header("x-forwarded-for", "192.0.2.1"),
        )
        .await;
    assert!(first.status.is_success());
    let second = untrusted
        .send(
            untrusted
                .client
                .post(untrusted.api(&format!("rooms/{id}/join")))
                .header("x-forwarded-for", "192.0.2.2"),
        )
        .await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    untrusted.stop().await;
    app.stop().await;
}
