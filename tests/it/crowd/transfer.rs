//! Moving places between devices at crowd scale: 500 places on two nodes sharing one Redis,
//! each transferred with a code made on one node and claimed on the other while a rival
//! claims the same code on the first. Every place ends with exactly one live holder at its
//! position, every code moves a place at most once, and every old ticket answers
//! `transferred` (and its pass, for an admitted place, stops working).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{cli_u64, key};
use crate::harness::*;

const PLACES: usize = 500;
const SLOTS: u32 = 20;

struct Place {
    node: usize,
    ticket: String,
    state: String,
    position: u64,
    pass: Option<String>,
}

async fn post(client: &reqwest::Client, url: String, bearer: Option<&str>, body: Value) -> Reply {
    let mut req = client.post(url).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    reply(req.send().await.expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_transfers_keep_one_holder_per_place() {
    let redis = RedisServer::start().await;
    let id = room_id();
    let mut r = room(&id);
    r.max_active = SLOTS;
    let cfg = config(Some(redis.url()), vec![r]);
    let nodes = Arc::new([spawn_app(cfg.clone()).await, spawn_app(cfg).await]);

    // 500 shoppers join, half on each node; the first SLOTS are admitted, the rest wait.
    let joined: Vec<(usize, String)> = stream::iter(0..PLACES)
        .map(|i| {
            let nodes = nodes.clone();
            let id = id.clone();
            async move {
                let j = nodes[i % 2].join(&id, None, None).await;
                assert_eq!(j.status, StatusCode::CREATED, "{}", j.body);
                (i % 2, j.str("ticket").to_string())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    wait_until(Duration::from_secs(20), "the room fills its slots", || {
        let nodes = nodes.clone();
        let id = id.clone();
        async move { nodes[0].status(&id).await.u64("active") == u64::from(SLOTS) }
    })
    .await;
    nodes[0].settle(&id).await;
    nodes[1].settle(&id).await;
    // Where each place stands before (nobody leaves, so positions hold still).
    let before: Vec<Place> = stream::iter(joined)
        .map(|(node, ticket)| {
            let nodes = nodes.clone();
            let id = id.clone();
            async move {
                let p = nodes[node].position(&id, &ticket).await;
                Place {
                    node,
                    state: p.str("state").to_string(),
                    position: p.u64("position"),
                    pass: p.body["pass"].as_str().map(str::to_string),
                    ticket,
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let admitted = before.iter().filter(|p| p.state == "admitted").count();
    assert_eq!(admitted, SLOTS as usize);
    assert_eq!(
        before.iter().filter(|p| p.state == "waiting").count(),
        PLACES - admitted
    );

    // Every place: a code from its own node, claimed on the other node while a rival claims
    // the same code on the first node at the same moment.
    let results: Vec<(usize, Reply, Reply, String)> = stream::iter(before.iter().enumerate())
        .map(|(i, place)| {
            let nodes = nodes.clone();
            let id = id.clone();
            let ticket = place.ticket.clone();
            let node = place.node;
            async move {
                let client = reqwest::Client::new();
                let offer = post(
                    &client,
                    nodes[node].api(&format!("rooms/{id}/transfer")),
                    Some(&ticket),
                    json!({}),
                )
                .await;
                assert_eq!(offer.status, StatusCode::CREATED, "{}", offer.body);
                assert_eq!(offer.u64("expires_in"), 120);
                let code = offer.str("code").to_string();
                let (new_device, rival) = (reqwest::Client::new(), reqwest::Client::new());
                let (claimed, raced) = tokio::join!(
                    post(
                        &new_device,
                        nodes[1 - node].api(&format!("rooms/{id}/claim")),
                        None,
                        json!({ "code": code }),
                    ),
                    post(
                        &rival,
                        nodes[node].api(&format!("rooms/{id}/claim")),
                        None,
                        json!({ "code": code.to_lowercase() }),
                    ),
                );
                (i, claimed, raced, code)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;

    let mut codes = HashSet::new();
    let mut new_tickets = vec![String::new(); PLACES];
    for (i, a, b, code) in &results {
        assert!(codes.insert(code.clone()), "code {code} handed out twice");
        let ok: Vec<&Reply> = [a, b]
            .into_iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect();
        assert_eq!(
            ok.len(),
            1,
            "code {code} moved the place {} times",
            ok.len()
        );
        let loser = if a.status == StatusCode::OK { b } else { a };
        assert_eq!(loser.status, StatusCode::NOT_FOUND, "{}", loser.body);
        assert!(
            loser.str("type").ends_with("unknown-transfer-code"),
            "{}",
            loser.body
        );
        let won = ok[0];
        let place = &before[*i];
        assert_eq!(won.str("state"), place.state, "{}", won.body);
        assert_eq!(won.u64("position"), place.position, "{}", won.body);
        assert!(won
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("rg_ticket_{id}="))));
        new_tickets[*i] = won.str("ticket").to_string();
    }

    // Within a refresh every node knows: old tickets answer `transferred`, new ones hold the
    // place at the same position, old passes stop working and new ones work.
    wait_until(
        Duration::from_secs(5),
        "every node learned the moves",
        || {
            let nodes = nodes.clone();
            let id = id.clone();
            let sample: Vec<String> = before
                .iter()
                .step_by(25)
                .map(|p| p.ticket.clone())
                .collect();
            async move {
                for node in nodes.iter() {
                    for t in &sample {
                        if node.position(&id, t).await.str("state") != "transferred" {
                            return false;
                        }
                    }
                }
                true
            }
        },
    )
    .await;
    let checks: Vec<()> = stream::iter(before.iter().zip(new_tickets.iter()))
        .map(|(place, fresh)| {
            let nodes = nodes.clone();
            let id = id.clone();
            async move {
                for node in nodes.iter() {
                    let old = node.position(&id, &place.ticket).await;
                    assert_eq!(old.str("state"), "transferred", "{}", old.body);
                    assert!(old.body["ticket"].is_null(), "{}", old.body);
                    let new = node.position(&id, fresh).await;
                    assert_eq!(new.str("state"), place.state, "{}", new.body);
                    assert_eq!(new.u64("position"), place.position, "{}", new.body);
                    if let Some(old_pass) = &place.pass {
                        let gate = |pass: String| {
                            let url = node.api(&format!("rooms/{id}/gate"));
                            let client = node.client.clone();
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
                        assert_eq!(gate(old_pass.clone()).await, StatusCode::UNAUTHORIZED);
                        let new_pass = new.str("pass").to_string();
                        assert_ne!(&new_pass, old_pass);
                        assert_eq!(gate(new_pass).await, StatusCode::NO_CONTENT);
                    }
                }
                // The old holder can no longer move, leave or re-offer the place.
                let again = nodes[place.node]
                    .send(
                        nodes[place.node]
                            .client
                            .post(nodes[place.node].api(&format!("rooms/{id}/transfer")))
                            .bearer_auth(&place.ticket),
                    )
                    .await;
                assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
                let left = nodes[place.node].leave(&id, &place.ticket).await;
                assert_eq!(left.status, StatusCode::CONFLICT, "{}", left.body);
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(checks.len(), PLACES);

    // The store still holds exactly the 500 places: none duplicated, none lost.
    let waiting = cli_u64(&redis, &["ZCARD", &key(&id, "q")]);
    let active = cli_u64(&redis, &["ZCARD", &key(&id, "active")]);
    assert_eq!(
        (waiting, active),
        ((PLACES - SLOTS as usize) as u64, u64::from(SLOTS))
    );
    for node in Arc::try_unwrap(nodes).ok().expect("no other owner") {
        node.stop().await;
    }
}
