//! A real Prometheus (the Debian package, installed by scripts/test.sh) scrapes a rushgate node
//! while a crowd joins and polls; the test reads a room gauge and counters back through the
//! Prometheus HTTP API. Also: every metric the Grafana dashboard queries is exported, and every
//! dashboard expression is PromQL that Prometheus accepts.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rushgate::config::{LimitsConfig, SaleConfig, Secret};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::{dashboard_exprs, dashboard_metric_names, exposed_names, scrape};
use crate::harness::*;

/// A Prometheus server with its own config and storage, killed on drop.
struct Prometheus {
    base: String,
    client: reqwest::Client,
    child: Child,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (an admin listener) every 500 ms. Panics with the
    /// fix when the binary is missing: this test never skips.
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: rushgate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `prometheus` ({e}). This test needs a real Prometheus: run \
                     scripts/test.sh (it installs the Debian package) or `apt-get install \
                     prometheus`"
                )
            });
        let prom = Prometheus {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            child,
            _dir: dir,
        };
        let (client, ready) = (prom.client.clone(), format!("{}/-/ready", prom.base));
        wait_until(Duration::from_secs(30), "prometheus is ready", || {
            let (client, ready) = (client.clone(), ready.clone());
            async move {
                client
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            }
        })
        .await;
        prom
    }

    /// `GET /api/v1/query`: the parsed answer (`status`, `data`, or `error`).
    async fn query(&self, promql: &str) -> Value {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(promql));
        match self.client.get(&url).send().await {
            Ok(resp) => resp.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// The value of a query that returns one sample, if it does.
    async fn scalar(&self, promql: &str) -> Option<f64> {
        let answer = self.query(promql).await;
        let result = answer["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` returns one sample for which `ok` holds.
    async fn wait_for(&self, promql: &str, what: &str, ok: impl Fn(f64) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.scalar(promql).await;
            if value.is_some_and(&ok) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Prometheus never saw {what}: `{promql}` last returned {value:?} ({})",
                self.query(promql).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_room_gauges_and_counters_during_a_crowd() {
    let redis = RedisServer::start().await;
    let room_id = room_id();
    let mut r = room(&room_id);
    r.max_active = 100; // 300 joins: 100 admitted at once, 200 wait (sessions last 10 minutes)
    let mut c = config(Some(redis.url()), vec![r]);
    c.limits = LimitsConfig::off(); // one client IP plays the whole crowd
    let app = spawn_app(c).await;
    let prom = Prometheus::start(app.app.as_ref().expect("running").admin_addr).await;
    prom.wait_for(
        &format!(
            "up{{instance=\"{}\"}}",
            app.admin.trim_start_matches("http://")
        ),
        "the node's target up",
        |v| v == 1.0,
    )
    .await;

    let joined: Vec<Reply> = stream::iter(0..300)
        .map(|i| {
            let (app, room_id) = (&app, &room_id);
            async move { app.join(room_id, Some(&format!("shopper-{i}")), None).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(joined.iter().all(|r| r.status == StatusCode::CREATED));
    let tickets: Vec<String> = joined
        .iter()
        .filter(|r| r.str("state") == "waiting")
        .map(|r| r.str("ticket").to_string())
        .collect();
    assert!(
        tickets.len() >= 200,
        "at least 200 of 300 wait behind the cap of 100"
    );

    // The crowd keeps polling while Prometheus scrapes.
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let (client, base, polling) = (
            app.client.clone(),
            app.api(&format!("rooms/{room_id}/position")),
            polling.clone(),
        );
        tokio::spawn(async move {
            // Pacing of the load (a round every 50 ms), not a wait for a condition.
            let mut every = tokio::time::interval(Duration::from_millis(50));
            while polling.load(Ordering::Relaxed) {
                every.tick().await;
                stream::iter(tickets.iter().take(50))
                    .for_each_concurrent(16, |t| {
                        let req = client.get(&base).bearer_auth(t);
                        async move {
                            let r = req.send().await.expect("poll");
                            assert_eq!(r.status(), StatusCode::OK, "poll");
                        }
                    })
                    .await;
            }
        })
    };

    let room = format!("room=\"{room_id}\"");
    prom.wait_for(
        &format!("rushgate_room_waiting{{{room}}}"),
        "200 waiting",
        |v| v == 200.0,
    )
    .await;
    prom.wait_for(
        &format!("rushgate_room_active{{{room}}}"),
        "100 active",
        |v| v == 100.0,
    )
    .await;
    prom.wait_for(
        &format!("rushgate_room_admitted_total{{{room}}}"),
        "100 admitted",
        |v| v == 100.0,
    )
    .await;
    prom.wait_for(
        &format!("rushgate_room_joins_total{{{room}}}"),
        "300 joins",
        |v| v == 300.0,
    )
    .await;
    prom.wait_for(
        &format!("rushgate_room_eta_p50_seconds{{{room}}}"),
        "a finite ETA",
        |v| v.is_finite() && v >= 0.0,
    )
    .await;
    prom.wait_for(
        "sum(rushgate_http_requests_total{route=\"join\",status=\"201\"})",
        "the 300 joins counted",
        |v| v >= 300.0,
    )
    .await;
    prom.wait_for(
        "sum(rate(rushgate_http_requests_total{route=\"position\",status=\"200\"}[5s]))",
        "polls arriving while it scrapes",
        |v| v > 0.0,
    )
    .await;
    prom.wait_for(
        "sum(rushgate_http_request_duration_seconds_count{route=\"join\"})",
        "the latency histogram",
        |v| v >= 300.0,
    )
    .await;

    // Every dashboard expression is PromQL this Prometheus evaluates without error.
    for expr in dashboard_exprs() {
        let answer = prom.query(&expr).await;
        assert_eq!(
            answer["status"], "success",
            "dashboard expr `{expr}`: {answer}"
        );
    }

    polling.store(false, Ordering::Relaxed);
    poller.await.expect("poller");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported() {
    let redis = RedisServer::start().await;
    let room_id = room_id();
    let sale_id = format!("s{}", &room_id[1..]);
    let mut c = config(Some(redis.url()), vec![room(&room_id)]);
    c.sales = vec![SaleConfig::with_ids(&sale_id, &room_id, 10)];
    c.shop.api_key = Secret("test-shop-key-0123456789".into());
    c.limits = LimitsConfig::off();
    let app = spawn_app(c).await;
    let state = app.app.as_ref().expect("running").state.clone();
    app.wait_sales_read().await;
    let sale = state.sales.get(&sale_id).expect("sale").clone();

    let joined = app.join(&room_id, Some("buyer"), None).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    let now = rushgate::clock::now_ms() / 1000;
    let pass = state
        .passes
        .issue(&room_id, "buyer", 1, now, now + 600)
        .expect("pass");
    let bought = app
        .send(
            app.client
                .post(app.api(&format!("sales/{sale_id}/purchase")))
                .bearer_auth(&pass)
                .json(&json!({"quantity": 1})),
        )
        .await;
    assert!(bought.status.is_success(), "{}", bought.body);
    app.settle(&room_id).await;
    wait_until(
        Duration::from_secs(10),
        "the purchase shows in the stock",
        || {
            let sale = sale.clone();
            async move { sale.cached_state().is_some_and(|s| s.reserved == 1) }
        },
    )
    .await;

    let text = scrape(&app).await;
    let exported = exposed_names(&text);
    let wanted = dashboard_metric_names();
    assert!(wanted.len() >= 15, "dashboard names: {wanted:?}");
    let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n{text}"
    );
    // Every exported rushgate metric is described (has # HELP), with a unit where it has one.
    for name in exported.iter().filter(|n| n.starts_with("rushgate_")) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| text.contains(&format!("# TYPE {b} histogram")))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# HELP {base} ")),
            "{base} is not described"
        );
    }
    let value = |name: &str, label: &str, v: &str| super::exposed_value(&text, name, label, v);
    assert_eq!(
        value("rushgate_sale_reserved_units", "sale", &sale_id),
        Some(1.0)
    );
    assert_eq!(
        value("rushgate_sale_available_units", "sale", &sale_id),
        Some(9.0)
    );
    assert_eq!(
        value("rushgate_room_joins_total", "room", &room_id),
        Some(1.0)
    );
    app.stop().await;
}
