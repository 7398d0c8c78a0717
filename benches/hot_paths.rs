//! Micro-benchmarks of the functions on the poll and admission paths: ticket verify (every
//! poll), position lookup in a cached snapshot, pass sign and verify (every admission / proxied
//! request), config parsing. Crowd-scale numbers come from `loadtest/`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use rushgate::config::Config;
use rushgate::pass::{PassAlgorithm, PassIssuer, PassKeys, TicketClaims, TicketSigner};
use rushgate::queue::{Rates, Snapshot};
use rushgate::store::{GoneBits, RoomState, RoomStatus};

fn tickets(c: &mut Criterion) {
    let signer = TicketSigner::new(b"bench-secret-0123456789abcdef");
    let claims = TicketClaims {
        room: "drop".into(),
        id: TicketSigner::anonymous_identity(),
        seq: 123_456,
        iat: 1_795_000_000,
        pos: 123_000,
    };
    let token = signer.sign(&claims);
    c.bench_function("ticket_sign", |b| {
        b.iter(|| signer.sign(black_box(&claims)))
    });
    c.bench_function("ticket_verify", |b| {
        b.iter(|| signer.verify(black_box(&token)))
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

criterion_group!(benches, tickets, passes, position, config);
criterion_main!(benches);
