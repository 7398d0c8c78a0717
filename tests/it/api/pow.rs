//! Proof of work over HTTP. With `pow = "always"` (both stores): a join without a solution is
//! `401 pow-required` and changes nothing; a correct solution joins once, its replay is refused
//! on the same node and on a second node sharing the Redis, a wrong nonce, a tampered challenge,
//! a malformed nonce and another client address are refused; polls and a re-join with a valid
//! ticket are never asked. With `adaptive`: a join flood from one address raises the difficulty
//! (401 bodies and the gauge) and it falls back once the flood ends. The proxy's waiting page
//! carries the challenge in its `pow` state and joins with the answer cookie.

use std::time::Duration;

use reqwest::StatusCode;
use rushgate::config::{PowMode, RoomConfig};
use rushgate::queue::pow::{leading_zero_bits, solve, work_hash};
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::*;

/// A room asking for work on every new place, at exactly `bits`.
fn pow_room(id: &str, mode: PowMode, min_bits: u8, max_bits: u8) -> RoomConfig {
    let mut r = room(id);
    r.pow = mode;
    r.pow_min_bits = min_bits;
    r.pow_max_bits = max_bits;
    r
}

/// `POST join` with `body` (JSON) and optionally a bearer ticket and an `X-Forwarded-For`.
async fn join_with(
    app: &TestApp,
    room: &str,
    body: Option<Value>,
    ticket: Option<&str>,
    forwarded_for: Option<&str>,
) -> Reply {
    let mut req = app.client.post(app.api(&format!("rooms/{room}/join")));
    if let Some(body) = body {
        req = req.json(&body);
    }
    if let Some(t) = ticket {
        req = req.bearer_auth(t);
    }
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    app.send(req).await
}

/// The challenge of a `pow-required` answer, checked for shape: (challenge, difficulty).
fn challenge_of(r: &Reply) -> (String, u8) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(r.str("type").ends_with("/pow-required"), "{}", r.body);
    let challenge = r.str("challenge").to_string();
    assert!(
        !challenge.is_empty() && challenge.len() <= 256,
        "{}",
        r.body
    );
    let difficulty = u8::try_from(r.u64("difficulty")).expect("bits");
    let expires_in = r.u64("expires_in");
    assert!((100..=120).contains(&expires_in), "{expires_in}");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    (challenge, difficulty)
}

/// The body of a join that answers `challenge` with `nonce`.
fn answer(challenge: &str, nonce: impl ToString) -> Value {
    json!({ "pow": { "challenge": challenge, "nonce": nonce.to_string() } })
}

/// A nonce that does not solve `challenge` at `bits`.
fn wrong_nonce(challenge: &str, bits: u8) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| leading_zero_bits(&work_hash(challenge, n)) < u32::from(bits))
        .expect("a failing nonce")
}

fn problem_type(r: &Reply) -> &str {
    r.str("type").rsplit('/').next().unwrap_or_default()
}

/// The value of the series `name{room="room"...}` in a Prometheus text page whose labels
/// also contain every one of `labels`.
fn series(text: &str, name: &str, room: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("room=\"{room}\"")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

both_stores!(always_asks_for_work_and_a_solution_joins_once);
async fn always_asks_for_work_and_a_solution_joins_once(kind: StoreKind) {
    let (_redis, url) = store_url(kind).await;
    let id = room_id();
    let mut c = config(url.clone(), vec![pow_room(&id, PowMode::Always, 8, 8)]);
    // X-Forwarded-For counts from loopback, so the test can be two client addresses.
    c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    let app = spawn_app(c.clone()).await;

    // No solution: 401 with a challenge, and the room is as it was.
    let (challenge, bits) = challenge_of(&app.join(&id, None, None).await);
    assert_eq!(bits, 8);
    let (other_challenge, _) = challenge_of(&app.join(&id, Some("alice"), None).await);
    assert_ne!(challenge, other_challenge, "every challenge is new");
    app.settle(&id).await;
    let status = app.status(&id).await;
    assert_eq!(status.u64("last_number"), 0, "{}", status.body);
    assert_eq!(status.u64("waiting"), 0);
    assert_eq!(status.u64("active"), 0);

    // The solution joins.
    let nonce = solve(&challenge, bits);
    let joined = join_with(&app, &id, Some(answer(&challenge, nonce)), None, None).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    assert_eq!(joined.str("state"), "admitted");
    let ticket = joined.str("ticket").to_string();

    // Its replay is refused, and makes no place.
    let replay = join_with(&app, &id, Some(answer(&challenge, nonce)), None, None).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.body);
    assert_eq!(problem_type(&replay), "pow-replayed");

    // A wrong nonce, a tampered challenge, a malformed nonce, another client address.
    let (fresh, bits) = challenge_of(&app.join(&id, None, None).await);
    let wrong = join_with(
        &app,
        &id,
        Some(answer(&fresh, wrong_nonce(&fresh, bits))),
        None,
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert_eq!(problem_type(&wrong), "pow-invalid");
    assert!(
        wrong.str("detail").contains("leading zero bits"),
        "{}",
        wrong.body
    );
    let lowered = fresh.replacen(".8.", ".1.", 1);
    let tampered = join_with(
        &app,
        &id,
        Some(answer(&lowered, solve(&lowered, 1))),
        None,
        None,
    )
    .await;
    assert_eq!(
        tampered.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        tampered.body
    );
    assert_eq!(problem_type(&tampered), "pow-invalid");
    let malformed = join_with(&app, &id, Some(answer(&fresh, "12ab")), None, None).await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.body
    );
    assert_eq!(problem_type(&malformed), "pow-invalid");
    let (mine, bits) = challenge_of(&join_with(&app, &id, None, None, Some("203.0.113.7")).await);
    let nonce_mine = solve(&mine, bits);
    let elsewhere = join_with(
        &app,
        &id,
        Some(answer(&mine, nonce_mine)),
        None,
        Some("198.51.100.3"),
    )
    .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        elsewhere.body
    );
    assert!(
        elsewhere.str("detail").contains("another client address"),
        "{}",
        elsewhere.body
    );
    // The refusals used nothing up: the right address still joins with it.
    let mine_joined = join_with(
        &app,
        &id,
        Some(answer(&mine, nonce_mine)),
        None,
        Some("203.0.113.7"),
    )
    .await;
    assert_eq!(
        mine_joined.status,
        StatusCode::CREATED,
        "{}",
        mine_joined.body
    );

    // A shopper with a place is never asked: polls, and joins presenting the ticket.
    let polled = app.position(&id, &ticket).await;
    assert_eq!(polled.status, StatusCode::OK, "{}", polled.body);
    let again = app.join(&id, None, Some(&ticket)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.str("ticket"), ticket);
    // ...but a ticket does not carry a new user key past the work.
    let other_user = app.join(&id, Some("mallory"), Some(&ticket)).await;
    assert_eq!(
        other_user.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        other_user.body
    );
    assert_eq!(problem_type(&other_user), "pow-required");

    // A place given up cannot be re-made from its old ticket without work.
    let left = app.leave(&id, &ticket).await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.body);
    let rejoin = app.join(&id, None, Some(&ticket)).await;
    assert_eq!(rejoin.status, StatusCode::UNAUTHORIZED, "{}", rejoin.body);
    assert_eq!(problem_type(&rejoin), "pow-required");

    if kind == StoreKind::Redis {
        // A second node on the same Redis: it refuses the replay of node 1's solution, and a
        // challenge of node 1 solved there joins once across both.
        let node2 = spawn_app(c.clone()).await;
        let replay2 = join_with(&node2, &id, Some(answer(&challenge, nonce)), None, None).await;
        assert_eq!(replay2.status, StatusCode::CONFLICT, "{}", replay2.body);
        assert_eq!(problem_type(&replay2), "pow-replayed");
        let (shared, bits) = challenge_of(&app.join(&id, None, None).await);
        let n = solve(&shared, bits);
        let there = join_with(&node2, &id, Some(answer(&shared, n)), None, None).await;
        assert_eq!(there.status, StatusCode::CREATED, "{}", there.body);
        let back = join_with(&app, &id, Some(answer(&shared, n)), None, None).await;
        assert_eq!(back.status, StatusCode::CONFLICT, "{}", back.body);
        node2.stop().await;
    }

    let metrics = app.metrics_text().await;
    assert!(
        series(&metrics, "rushgate_pow_challenges_total", &id, &[]).unwrap_or(0.0) >= 5.0,
        "{metrics}"
    );
    assert!(series(&metrics, "rushgate_pow_solved_total", &id, &[]).unwrap_or(0.0) >= 2.0);
    for reason in [
        "replayed",
        "not_enough_work",
        "bad_mac",
        "malformed",
        "other_address",
    ] {
        let label = format!("reason=\"{reason}\"");
        assert!(
            series(&metrics, "rushgate_pow_refused_total", &id, &[&label]).unwrap_or(0.0) >= 1.0,
            "{reason}: {metrics}"
        );
    }
    assert_eq!(
        series(&metrics, "rushgate_pow_difficulty_bits", &id, &[]),
        Some(8.0)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_work_rises_under_a_flood_from_one_address_and_falls_after() {
    let id = room_id();
    let mut r = pow_room(&id, PowMode::Adaptive, 8, 20);
    // One admission a second: a flood outpaces it many times over.
    r.admit_per_minute = 60;
    let app = spawn_app(config(None, vec![r])).await;
    let gauge = |text: &str| series(text, "rushgate_pow_difficulty_bits", &id, &[]);

    // A calm room asks nothing.
    let first = app.join(&id, None, None).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let ticket = first.str("ticket").to_string();
    assert_eq!(gauge(&app.metrics_text().await), Some(0.0));

    // A flood from one address: the work asked rises.
    let mut asked = Vec::new();
    for _ in 0..150 {
        let r = app.join(&id, None, None).await;
        match r.status {
            StatusCode::CREATED => assert!(asked.is_empty(), "joined after work was asked"),
            _ => asked.push(challenge_of(&r).1),
        }
    }
    assert!(asked.len() >= 100, "{asked:?}");
    let (lowest, highest) = (asked[0], *asked.iter().max().expect("asked"));
    assert!(lowest >= 8 && highest >= lowest + 3, "{asked:?}");
    assert!(highest <= 20, "{asked:?}");
    assert!(gauge(&app.metrics_text().await).unwrap_or(0.0) >= 9.0);
    // The shopper already in line is never asked: it polls and re-joins with its ticket.
    assert_eq!(app.position(&id, &ticket).await.status, StatusCode::OK);
    let again = app.join(&id, None, Some(&ticket)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    // The flood ends: the difficulty falls back to none (the gauge, and what this address
    // would be asked), and a plain join joins.
    let room = app
        .app
        .as_ref()
        .expect("running")
        .state
        .rooms
        .get(&id)
        .expect("room")
        .clone();
    let loopback: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    wait_until(
        Duration::from_secs(10),
        "the difficulty in force falls back to 0",
        || {
            let (app, room) = (&app, &room);
            async move {
                gauge(&app.metrics_text().await) == Some(0.0)
                    && room
                        .pow_difficulty(loopback, rushgate::clock::now_ms())
                        .is_none()
            }
        },
    )
    .await;
    let calm = app.join(&id, None, None).await;
    assert_eq!(calm.status, StatusCode::CREATED, "{}", calm.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_page_solves_first_and_joins_with_the_answer_cookie() {
    let id = room_id();
    let mut r = pow_room(&id, PowMode::Always, 8, 8);
    r.upstream = Some("builtin:demo".into());
    r.protect = vec!["/products/*".into()];
    let app = spawn_app(config(None, vec![r])).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = format!("{}/products/sneakers", app.base);

    // The page in its pow state: the challenge goes to the script, no place is made.
    let page = client
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("set-cookie").is_none());
    let html = page.text().await.unwrap();
    assert!(html.contains("data-state=\"pow\""), "{html}");
    let config_json = html
        .split("<script type=\"application/json\" id=\"rg-config\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("page config");
    let cfg: Value = serde_json::from_str(config_json).expect("config JSON");
    let challenge = cfg["pow"]["challenge"]
        .as_str()
        .expect("challenge")
        .to_string();
    let bits = u8::try_from(cfg["pow"]["difficulty"].as_u64().expect("bits")).expect("bits");
    assert_eq!(cfg["pow"]["cookie"], format!("rg_pow_{id}"));
    let worker_url = cfg["pow"]["worker_url"].as_str().expect("worker url");
    let worker = client
        .get(format!("{}{worker_url}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(worker.status(), StatusCode::OK);
    assert!(worker.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(worker.text().await.unwrap().contains("crypto.subtle"));

    // JSON clients get the problem.
    let json_mode = app
        .send(client.get(&url).header("accept", "application/json"))
        .await;
    challenge_of(&json_mode);

    // The answer cookie joins (admitted at once: 303 back with the pass) and is cleared.
    let cookie = format!("rg_pow_{id}={challenge}:{}", solve(&challenge, bits));
    let admitted = client
        .get(&url)
        .header("accept", "text/html")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(admitted.status(), StatusCode::SEE_OTHER);
    let cookies: Vec<String> = admitted
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("rg_pass_{id}="))),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("rg_pow_{id}=;"))),
        "{cookies:?}"
    );

    // The same cookie again (an old tab): a new challenge, not an error page.
    let stale = client
        .get(&url)
        .header("accept", "text/html")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    let html = stale.text().await.unwrap();
    assert!(html.contains("data-state=\"pow\""));
    assert!(!html.contains(&challenge), "the stale challenge came back");
    app.stop().await;
}
