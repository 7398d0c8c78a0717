//! Several drops at once (`[[groups]]`): a shopper waits in every room of a group and, with
//! `max_active_per_shopper = 1`, never holds two working passes at once across two nodes; an
//! admission beyond the cap is held (not lost) and gets its pass when the first session ends;
//! a held place may be given up; an anonymous browser is one shopper across the group.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use rushgate::config::GroupConfig;

use crate::harness::*;

/// What a round of polls saw: per room, the distinct passes handed out and the states.
#[derive(Debug, Default)]
struct Round {
    passes: HashMap<String, HashSet<String>>,
    states: HashMap<String, HashSet<String>>,
}

/// `polls` concurrent polls of each of `tickets` (room → ticket) on each node.
async fn round(nodes: &[&TestApp], tickets: &[(String, String)], polls: usize) -> Round {
    let answers = join_all(tickets.iter().flat_map(|(room, ticket)| {
        nodes.iter().flat_map(move |node| {
            (0..polls)
                .map(move |_| async move { (room.clone(), node.position(room, ticket).await) })
        })
    }))
    .await;
    let mut r = Round::default();
    for (room, p) in answers {
        assert!(p.status.is_success(), "{room}: {}", p.body);
        r.states
            .entry(room.clone())
            .or_default()
            .insert(p.str("state").to_string());
        if let Some(pass) = p.body["pass"].as_str() {
            r.passes.entry(room).or_default().insert(pass.to_string());
        }
    }
    r
}

/// Whether `pass` is a working pass of `room` on `node` (the gate answers 204).
async fn works(node: &TestApp, room: &str, pass: &str) -> bool {
    let r = node
        .send(
            node.client
                .get(node.api(&format!("rooms/{room}/gate")))
                .bearer_auth(pass),
        )
        .await;
    r.status == StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shopper_in_three_rooms_of_a_group_holds_one_working_pass_at_a_time() {
    let redis = RedisServer::start().await;
    let rooms: Vec<String> = (0..3).map(|_| room_id()).collect();
    let mut c = config(Some(redis.url()), rooms.iter().map(|r| room(r)).collect());
    c.groups = vec![GroupConfig {
        id: format!("g{}", &rooms[0][1..]),
        rooms: rooms.clone(),
        max_active_per_shopper: 1,
    }];
    let a = spawn_app(c.clone()).await;
    let b = spawn_app(c).await;
    let nodes = [&a, &b];

    // Alice joins the three drops, on alternating nodes, all at once: each room admits her at
    // once, and exactly one of them hands her a pass.
    let joins = join_all(rooms.iter().enumerate().map(|(i, r)| {
        let node = nodes[i % 2];
        async move { (r.clone(), node.join(r, Some("alice"), None).await) }
    }))
    .await;
    let mut tickets = Vec::new();
    let mut first_passes = HashMap::new();
    for (r, j) in &joins {
        assert!(j.status.is_success(), "{r}: {}", j.body);
        assert!(
            ["admitted", "held"].contains(&j.str("state")),
            "{r}: {}",
            j.body
        );
        if let Some(pass) = j.body["pass"].as_str() {
            first_passes.insert(r.clone(), pass.to_string());
        }
        tickets.push((r.clone(), j.str("ticket").to_string()));
    }
    let bodies: Vec<&serde_json::Value> = joins.iter().map(|(_, j)| &j.body).collect();
    assert_eq!(first_passes.len(), 1, "{bodies:?}");
    let (shopping, _) = first_passes
        .iter()
        .next()
        .map(|(r, p)| (r.clone(), p.clone()))
        .expect("one");

    // The node that did not take a join learns of her admission within one refresh (until
    // then its cache places the ticket at the head, "waiting"); wait for that, not a sleep.
    wait_until(
        Duration::from_secs(5),
        "both nodes know of every admission",
        || async {
            round(&nodes, &tickets, 1)
                .await
                .states
                .values()
                .all(|s| !s.contains("waiting"))
        },
    )
    .await;
    // 20 polls of every room on both nodes at once: passes only from the room she shops in,
    // "held" from the others.
    let r = round(&nodes, &tickets, 20).await;
    assert_eq!(
        r.passes.keys().collect::<Vec<_>>(),
        vec![&shopping],
        "{r:?}"
    );
    for (room, states) in &r.states {
        let want = if *room == shopping {
            "admitted"
        } else {
            "held"
        };
        assert_eq!(states, &HashSet::from([want.to_string()]), "{room}: {r:?}");
    }

    // Her session ends (leave): its pass stops working on both nodes, and one held place (not
    // lost) gets its pass; still only one room's.
    let shopping_ticket = &tickets.iter().find(|(r, _)| *r == shopping).expect("t").1;
    let left = a.leave(&shopping, shopping_ticket).await;
    assert!(left.status.is_success(), "{}", left.body);
    let old_pass = first_passes[&shopping].clone();
    let rest: Vec<(String, String)> = tickets
        .iter()
        .filter(|(r, _)| *r != shopping)
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let r = round(&nodes, &rest, 5).await;
        assert!(r.passes.len() <= 1, "two rooms handed out passes: {r:?}");
        if let Some(room) = r.passes.keys().next() {
            break room.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no held place got its pass: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for node in nodes {
        wait_until(
            Duration::from_secs(5),
            "the ended session's pass is revoked",
            || async { !works(node, &shopping, &old_pass).await },
        )
        .await;
    }
    let r = round(&nodes, &rest, 20).await;
    assert_eq!(r.passes.keys().collect::<Vec<_>>(), vec![&next], "{r:?}");

    // The third place is still held; she gives it up instead.
    let (third, third_ticket) = rest
        .iter()
        .find(|(r, _)| *r != next)
        .cloned()
        .expect("third");
    assert_eq!(a.position(&third, &third_ticket).await.str("state"), "held");
    let gave_up = b.leave(&third, &third_ticket).await;
    assert!(gave_up.status.is_success(), "{}", gave_up.body);
    let after = a.position(&third, &third_ticket).await;
    assert_ne!(after.str("state"), "held", "{}", after.body);
    assert!(after.body["pass"].is_null(), "{}", after.body);

    // An anonymous browser is one shopper across the group: its second room's join carries
    // the first room's ticket cookie, names the same identity, and is held.
    let first = a.join(&rooms[0], None, None).await;
    assert!(first.body["pass"].is_string(), "{}", first.body);
    let second = b
        .send(
            b.client
                .post(b.api(&format!("rooms/{}/join", rooms[1])))
                .header(
                    "cookie",
                    format!("rg_ticket_{}={}", rooms[0], first.str("ticket")),
                ),
        )
        .await;
    assert!(second.status.is_success(), "{}", second.body);
    assert_eq!(
        crate::crowd::identity_of(second.str("ticket")),
        crate::crowd::identity_of(first.str("ticket"))
    );
    assert_eq!(second.str("state"), "held", "{}", second.body);
    eprintln!("groups: one working pass at a time across 3 rooms and 2 nodes; held place admitted after the first session ended");
    a.stop().await;
    b.stop().await;
}
