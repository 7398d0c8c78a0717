//! Micro-benchmarks of the functions on the poll and admission paths: ticket verify (every
//! poll), position lookup in a cached snapshot, pass sign and verify (every admission / proxied
//! request), proof-of-work verification (every join that carries a solution), config parsing,
//! the embedded store's join and purchase, and the router (a request through the public
//! listener's service over a loopback keep-alive connection: routing, the handler and HTTP/1
//! framing). Crowd-scale numbers come from `loadtest/`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use rushgate::app::App;
use rushgate::config::PassAlgorithm;
use rushgate::config::{Config, RoomConfig};
use rushgate::id::RoomId;
use rushgate::pass::{PassIssuer, PassKeys, TicketClaims, TicketSigner};
use rushgate::queue::params_for;
use rushgate::queue::pow::{self, Challenges};
use rushgate::queue::{Rates, Snapshot};
use rushgate::store::sale::{SaleParams, SaleStore};
use rushgate::store::{GoneBits, RoomState, RoomStatus};
use rushgate::store::{MemoryStore, Store};

fn tickets(c: &mut Criterion) {
    let signer = TicketSigner::new(b"bench-secret-0123456789abcdef");
    let claims = TicketClaims {
        room: "drop".into(),
        id: TicketSigner::anonymous_identity(),
        seq: 123_456,
        iat: 1_795_000_000,
        pos: 123_000,
        gen: 0,
        uid: None,
    };
    let token = signer.sign(&claims);
    c.bench_function("ticket_sign", |b| {
        b.iter(|| signer.sign(black_box(&claims)))
    });
    c.bench_function("ticket_verify", |b| {
        b.iter(|| signer.verify(black_box(&token)))
    });
}

/// The server's cost per join of a room with proof of work: checking a solution (one HMAC, one
/// SHA-256, whatever the difficulty), a wrong nonce (the same work, refused at the last step), a
/// forged challenge (refused at the MAC), and issuing a challenge.
fn pow(c: &mut Criterion) {
    let challenges = Challenges::new(b"bench-secret-0123456789abcdef");
    let room = RoomId::parse("drop").unwrap();
    let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let now = 1_795_000_000_000;
    let challenge = challenges.issue(&room, client, 12, now);
    let nonce = pow::solve(&challenge.text, challenge.difficulty).to_string();
    let wrong = (0u64..)
        .map(|n| n.to_string())
        .find(|n| pow::leading_zero_bits(&pow::work_hash(&challenge.text, n)) < 12)
        .unwrap();
    let forged = format!("{}A", &challenge.text[..challenge.text.len() - 1]);
    assert!(challenges
        .verify(&room, client, &challenge.text, &nonce, now)
        .is_ok());
    c.bench_function("pow_verify", |b| {
        b.iter(|| {
            challenges.verify(
                &room,
                client,
                black_box(&challenge.text),
                black_box(&nonce),
                now,
            )
        })
    });
    c.bench_function("pow_verify_wrong_nonce", |b| {
        b.iter(|| {
            challenges.verify(
                &room,
                client,
                black_box(&challenge.text),
                black_box(&wrong),
                now,
            )
        })
    });
    c.bench_function("pow_verify_forged", |b| {
        b.iter(|| challenges.verify(&room, client, black_box(&forged), black_box(&nonce), now))
    });
    c.bench_function("pow_issue", |b| {
        b.iter(|| challenges.issue(&room, black_box(client), 12, now))
    });
}

fn passes(c: &mut Criterion) {
    for alg in [PassAlgorithm::EdDSA, PassAlgorithm::ES256] {
        let pem = PassKeys::generate_pem(alg).unwrap();
        let issuer = PassIssuer::new(PassKeys::from_pem(&pem, alg).unwrap(), "rushgate", "shop");
        let now = 1_795_000_000;
        let pass = issuer
            .issue("drop", "a0123456789abcde", 17, now, now + 600)
            .unwrap();
        c.bench_function(&format!("pass_sign_{alg}"), |b| {
            b.iter(|| issuer.issue("drop", "a0123456789abcde", 17, now, now + 600))
        });
        c.bench_function(&format!("pass_verify_{alg}"), |b| {
            b.iter(|| issuer.verify_at(black_box(&pass), now + 1))
        });
    }
}

fn position(c: &mut Criterion) {
    // One million waiters past the watermark, every 7th one departed.
    let served = 1_000u64;
    let last = served + 1_000_000;
    let base_byte = (served + 1) / 8;
    let mut bytes = vec![0u8; (last / 8 - base_byte + 1) as usize];
    for s in (served + 1..=last).filter(|s| s % 7 == 0) {
        bytes[(s / 8 - base_byte) as usize] |= 0x80 >> (s % 8);
    }
    let state = RoomState {
        served,
        last_seq: last,
        waiting: 857_143,
        active: 100,
        admitted_total: served,
        evicted_total: 142_857,
        left_total: 0,
        status: RoomStatus::Open,
        gone: Some(GoneBits {
            base_byte,
            bytes: Bytes::from(bytes),
        }),
        ..RoomState::default()
    };
    let snap = Snapshot::empty().next(state, Rates::default());
    c.bench_function("snapshot_locate_1m", |b| {
        b.iter(|| snap.locate(black_box(served + 765_432)))
    });
}

fn config(c: &mut Criterion) {
    let text = include_str!("../config/rushgate.toml");
    let env = std::collections::HashMap::<String, String>::new();
    c.bench_function("config_parse", |b| {
        b.iter(|| Config::from_toml_str(black_box(text), Path::new("bench.toml"), &env).unwrap())
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store(c: &mut Criterion) {
    let rt = runtime();
    let store = MemoryStore::new();
    let room = RoomId::parse("bench").unwrap();
    // Nobody is admitted (rate and cap 0 are refused by config validation, not by the store's
    // arithmetic; a tiny rate keeps every joiner waiting), so the line grows with each join.
    let mut rc = RoomConfig::with_id("bench");
    rc.admit_per_minute = 1;
    rc.max_active = 1;
    let params = params_for(&rc);
    let mut n = 0u64;
    c.bench_function("memory_store_join", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let id = format!("a{n:015}");
            let (store, room) = (&store, &room);
            async move {
                store
                    .join(room, &id, true, &params, 1_795_000_000_000)
                    .await
                    .unwrap()
            }
        })
    });
    let sale_id = rushgate::id::SaleId::parse("bench-sale").unwrap();
    rt.block_on(store.init_sale(&sale_id, u64::from(u32::MAX)))
        .unwrap();
    let sale = SaleParams {
        per_user_limit: u32::MAX,
        reservation_ms: 600_000,
    };
    let mut k = 0u64;
    c.bench_function("memory_store_purchase", |b| {
        b.to_async(&rt).iter(|| {
            k += 1;
            let (key, id) = (format!("k{k}"), format!("bench-sale.r{k}"));
            let (store, sale_id) = (&store, &sale_id);
            async move {
                store
                    .purchase(sale_id, "buyer", "", 1, &key, &sale, &id, 1_795_000_000_000)
                    .await
                    .unwrap()
            }
        })
    });
}

/// One GET over a keep-alive loopback connection to an in-process node (embedded store).
fn router(c: &mut Criterion) {
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [passes]\nsigning_key_file = \"{}\"\nticket_secret = \"bench-secret-0123456789\"\n\
         [limits]\npoll_per_minute = 0\njoin_per_minute = 0\n[log]\nlevel = \"error\"\n\
         [[rooms]]\nid = \"bench\"\nadmit_per_minute = 1\nmax_active = 1\n",
        dir.path().join("key.pem").display()
    );
    let env = std::collections::HashMap::<String, String>::new();
    let config = Config::from_toml_str(&text, Path::new("bench.toml"), &env).unwrap();
    let (app, mut sender, ticket) = rt.block_on(async {
        let app = App::start(config).await.unwrap();
        let stream = tokio::net::TcpStream::connect(app.public_addr)
            .await
            .unwrap();
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        // Two joins: the first is admitted at once (free slot), the second waits.
        let mut ticket = String::new();
        for _ in 0..2 {
            let req = http::Request::post("/_rushgate/v1/rooms/bench/join")
                .header("host", "bench")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let body = sender.send_request(req).await.unwrap().into_body();
            let v: serde_json::Value =
                serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
            ticket = v["ticket"].as_str().unwrap().to_string();
        }
        (app, sender, ticket)
    });
    let bearer = format!("Bearer {ticket}");
    for (name, path, auth) in [
        ("router_room_status", "/_rushgate/v1/rooms/bench", None),
        (
            "router_position_waiting",
            "/_rushgate/v1/rooms/bench/position",
            Some(bearer.as_str()),
        ),
        ("router_unknown_404", "/_rushgate/v1/nope", None),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = http::Request::get(path).header("host", "bench");
                    if let Some(a) = auth {
                        req = req.header("authorization", a);
                    }
                    let resp = sender
                        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                        .await
                        .unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes()
                })
            })
        });
    }
    drop(sender);
    rt.block_on(app.shutdown());
}

criterion_group!(benches, tickets, pow, passes, position, config, store, router);
criterion_main!(benches);
