//! Node drain and node loss with the real binary: on SIGTERM a node answers `/readyz` 503 at
//! once and keeps serving for `server.drain_seconds`, so a crowd that follows readiness (as a
//! load balancer does) moves to the other node without one failed request; and a node killed
//! with SIGKILL loses no place: its waiters continue on the other node with the same ticket.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;

use crate::harness::*;

/// The binary serving one room on `redis`, killed on drop.
struct Node {
    child: Child,
    public: u16,
    admin: u16,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(redis: &RedisServer, room: &str, drain_seconds: u64) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (public, admin) = (free_port(), free_port());
        let config = dir.path().join("rushgate.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
                 drain_seconds = {drain_seconds}\n\
                 [store]\nredis_url = \"{}\"\nrefresh_ms = 50\n\
                 [passes]\nsigning_key_file = \"{}\"\nticket_secret = \"drain-test-secret-0123456789\"\n\
                 [limits]\njoin_per_minute = 0\npoll_per_minute = 0\n\
                 [[rooms]]\nid = \"{room}\"\nadmit_per_minute = 60\nmax_active = 1\nidle_timeout_seconds = 60\n",
                redis.url(),
                std::env::temp_dir().join("rushgate-drain-test-key.pem").display()
            ),
        )
        .expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_rushgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rushgate");
        let node = Node {
            child,
            public,
            admin,
            _dir: dir,
        };
        wait_until(Duration::from_secs(20), "the node is ready", || async {
            node.ready().await == Some(StatusCode::OK)
        })
        .await;
        node
    }

    async fn ready(&self) -> Option<StatusCode> {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", self.admin))
            .await
            .ok()
            .map(|r| r.status())
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/_rushgate/v1/{path}", self.public)
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn poll(
    client: &reqwest::Client,
    url: &str,
    ticket: &str,
) -> Result<(StatusCode, serde_json::Value), reqwest::Error> {
    let r = client.get(url).bearer_auth(ticket).send().await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_and_a_polling_crowd_moves_without_a_failed_request() {
    let redis = RedisServer::start().await;
    let room = room_id();
    let a = Arc::new(Node::start(&redis, &room, 2).await);
    let b = Arc::new(Node::start(&redis, &room, 2).await);
    let client = reqwest::Client::new();
    // 200 shoppers joined through node A.
    let mut tickets = Vec::new();
    for _ in 0..200 {
        let r = client
            .post(a.api(&format!("rooms/{room}/join")))
            .send()
            .await
            .expect("join");
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: serde_json::Value = r.json().await.expect("json");
        tickets.push(body["ticket"].as_str().expect("ticket").to_string());
    }
    // The crowd polls the node the "load balancer" routes to: A while it is ready, else B.
    let a_ready = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, on_b) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let balancer = {
        let (a, a_ready, stop) = (a.clone(), a_ready.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if a.ready().await != Some(StatusCode::OK) {
                    a_ready.store(false, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let crowd = {
        let (a, b, room, a_ready, stop) = (
            a.clone(),
            b.clone(),
            room.clone(),
            a_ready.clone(),
            stop.clone(),
        );
        let (ok, failed, on_b) = (ok.clone(), failed.clone(), on_b.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                stream::iter(tickets.iter())
                    .for_each_concurrent(50, |t| {
                        let use_a = a_ready.load(Ordering::Relaxed);
                        let url = if use_a {
                            a.api(&format!("rooms/{room}/position"))
                        } else {
                            b.api(&format!("rooms/{room}/position"))
                        };
                        let (client, ok, failed, on_b) =
                            (client.clone(), ok.clone(), failed.clone(), on_b.clone());
                        async move {
                            match poll(&client, &url, t).await {
                                Ok((StatusCode::OK, body))
                                    if body["state"] == "waiting"
                                        || body["state"] == "admitted" =>
                                {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    if !use_a {
                                        on_b.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                other => {
                                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                        eprintln!("failed poll: {other:?}");
                                    }
                                }
                            }
                        }
                    })
                    .await;
            }
        })
    };
    wait_until(Duration::from_secs(10), "the crowd polls node A", || {
        let ok = ok.clone();
        async move { ok.load(Ordering::Relaxed) > 400 }
    })
    .await;
    // Rolling restart of A: SIGTERM; readiness drops at once, serving goes on for 2 s.
    a.signal("TERM");
    wait_until(
        Duration::from_secs(1),
        "A answers /readyz 503 at once",
        || async { a.ready().await == Some(StatusCode::SERVICE_UNAVAILABLE) },
    )
    .await;
    wait_until(Duration::from_secs(10), "the crowd moved to B", || {
        let on_b = on_b.clone();
        async move { on_b.load(Ordering::Relaxed) > 400 }
    })
    .await;
    // A exits by itself after the drain.
    wait_until(Duration::from_secs(20), "A stopped", || async {
        a.ready().await.is_none()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    crowd.await.expect("crowd");
    balancer.await.expect("balancer");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed polls during the restart"
    );
    assert!(b.ready().await == Some(StatusCode::OK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_no_place() {
    let redis = RedisServer::start().await;
    let room = room_id();
    let a = Node::start(&redis, &room, 0).await;
    let b = Node::start(&redis, &room, 0).await;
    let client = reqwest::Client::new();
    let mut tickets = Vec::new();
    for _ in 0..5 {
        let r = client
            .post(a.api(&format!("rooms/{room}/join")))
            .send()
            .await
            .expect("join");
        let body: serde_json::Value = r.json().await.expect("json");
        tickets.push(body["ticket"].as_str().expect("ticket").to_string());
    }
    let positions: Vec<u64> = {
        let mut out = Vec::new();
        for t in &tickets {
            let (_, body) = poll(&client, &a.api(&format!("rooms/{room}/position")), t)
                .await
                .expect("poll");
            out.push(body["position"].as_u64().unwrap_or(0));
        }
        out
    };
    a.signal("KILL");
    wait_until(Duration::from_secs(10), "A is gone", || async {
        a.ready().await.is_none()
    })
    .await;
    // Same tickets, other node: every place is still there, no position went up (an admitted
    // place is admitted on B too once B's cache has seen the admission: one refresh).
    for (t, before) in tickets.iter().zip(positions) {
        wait_until(
            Duration::from_secs(2),
            "the place stands on node B",
            || async {
                let Ok((status, body)) =
                    poll(&client, &b.api(&format!("rooms/{room}/position")), t).await
                else {
                    return false;
                };
                let state = body["state"].as_str().unwrap_or("");
                let position = body["position"].as_u64().unwrap_or(0);
                status == StatusCode::OK
                    && match before {
                        0 => state == "admitted",
                        _ => state == "admitted" || (state == "waiting" && position <= before),
                    }
            },
        )
        .await;
    }
}
