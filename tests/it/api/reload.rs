//! Hot reload: a broken file keeps the running config and names every problem; a valid change
//! applies while a crowd keeps polling and joining, with no failed request and no place lost;
//! a removed room drains instead of vanishing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rushgate::app::App;
use rushgate::config::{Config, Secret};

use crate::harness::*;

const TOKEN: &str = "admin-token-0123456789abcdef";

fn write(path: &std::path::Path, config: &Config) {
    std::fs::write(path, toml::to_string(config).expect("serialize config")).expect("write config");
}

async fn reload(app: &TestApp) -> Reply {
    app.send(
        app.client
            .post(format!("{}/admin/v1/reload", app.admin))
            .bearer_auth(TOKEN),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_valid_changes_under_load_and_refuses_broken_files() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("rushgate.toml");
    let (kept, removed, added) = (room_id(), room_id(), room_id());
    let mut cfg = config(Some(redis.url()), vec![room(&kept), room(&removed)]);
    cfg.admin.token = Secret(TOKEN.into());
    cfg.rooms[0].max_active = 1;
    cfg.rooms[1].max_active = 1;
    write(&path, &cfg);
    let app = App::start_with_file(cfg.clone(), Some(path.clone()))
        .await
        .expect("starts");
    let t = TestApp {
        base: format!("http://{}", app.public_addr),
        admin: format!("http://{}", app.admin_addr),
        client: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("client"),
        app: Some(app),
    };

    // A queue forms in `kept` (one slot) and one shopper waits in the room to be removed.
    t.join(&kept, Some("holder"), None).await;
    let waiter = t.join(&kept, Some("waiter"), None).await;
    assert_eq!(waiter.str("state"), "waiting");
    let ticket = waiter.str("ticket").to_string();
    t.join(&removed, Some("r-holder"), None).await;
    let in_removed = t.join(&removed, Some("r-waiter"), None).await;
    let removed_ticket = in_removed.str("ticket").to_string();

    // A broken file: refused with every problem named, nothing changes.
    let mut broken = cfg.clone();
    broken.rooms[0].admit_per_minute = 0;
    broken.rooms[1].idle_timeout_seconds = 0;
    write(&path, &broken);
    let r = reload(&t).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let detail = r.str("detail");
    assert!(detail.contains("rooms[0].admit_per_minute"), "{detail}");
    assert!(detail.contains("rooms[1].idle_timeout_seconds"), "{detail}");
    std::fs::write(&path, "[[rooms]\nid = ").expect("write");
    let r = reload(&t).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(t.status(&kept).await.u64("admit_per_minute"), 60_000);
    assert_eq!(t.position(&kept, &ticket).await.str("state"), "waiting");

    // A crowd keeps joining and polling while a valid change is applied.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut crowd = Vec::new();
    for w in 0..8 {
        let (client, base, kept, stop, ok, failed) = (
            t.client.clone(),
            t.base.clone(),
            kept.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        crowd.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = format!("{base}/_rushgate/v1/rooms/{kept}/join");
                let sent = client
                    .post(url)
                    .json(&serde_json::json!({"user": format!("c{w}-{i}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    wait_until(Duration::from_secs(10), "the crowd is running", || async {
        ok.load(Ordering::Relaxed) > 50
    })
    .await;
    let mut next = cfg.clone();
    next.rooms[0].admit_per_minute = 1_200;
    next.rooms[0].message = "reloaded".into();
    next.rooms.remove(1);
    next.rooms.push(room(&added));
    write(&path, &next);
    let r = reload(&t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let report = &r.body["report"];
    assert_eq!(report["changed_rooms"][0], kept.as_str(), "{report}");
    assert_eq!(report["added_rooms"][0], added.as_str(), "{report}");
    assert_eq!(report["draining_rooms"][0], removed.as_str(), "{report}");
    let before = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(10),
        "the crowd keeps going after the reload",
        || async { ok.load(Ordering::Relaxed) > before + 50 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in crowd {
        task.await.expect("crowd task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the reload"
    );

    // The new settings are live; the waiter kept its place; the new room works.
    let status = t.status(&kept).await;
    assert_eq!(status.u64("admit_per_minute"), 1_200, "{}", status.body);
    assert_eq!(status.str("message"), "reloaded");
    let p = t.position(&kept, &ticket).await;
    assert_eq!(
        (p.str("state"), p.u64("position")),
        ("waiting", 1),
        "{}",
        p.body
    );
    assert_eq!(t.join(&added, None, None).await.str("state"), "admitted");

    // The removed room drains: no new joins, its waiter is admitted.
    wait_until(
        Duration::from_secs(5),
        "the removed room drains",
        || async { t.status(&removed).await.str("state") == "draining" },
    )
    .await;
    assert_eq!(
        t.join(&removed, Some("newcomer"), None).await.str("state"),
        "closed"
    );
    wait_until(Duration::from_secs(5), "its waiter is admitted", || async {
        t.position(&removed, &removed_ticket).await.str("state") == "admitted"
    })
    .await;
    t.stop().await;
}
