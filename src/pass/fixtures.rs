//! Test-only fixtures shared by the ticket, key and pass unit tests: a fixed clock,
//! hostile token inputs, and fresh keys / issuers for each algorithm.

use crate::config::PassAlgorithm;

use super::{PassIssuer, PassKeys};

/// A fixed "now" (unix seconds) so time checks are deterministic.
pub(super) const NOW: u64 = 1_700_000_000;

/// Inputs no ticket or pass verifier may accept (or panic on).
pub(super) fn weird_inputs() -> Vec<String> {
    let mut v: Vec<String> = vec![
        String::new(),
        ".".into(),
        ".....".into(),
        "......".into(),
        ".".repeat(10_000),
        "a".repeat(10_000),
        "é.ü.€.𝄞.\u{0}.\u{FFFD}".into(),
        "🦀.🦀.🦀.🦀.🦀.🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀".into(),
        "room.AAAAAAAAAAAAAAAA.1.2.3.".into(),
        "room.AAAAAAAAAAAAAAAA.1.2.3.!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!".into(),
        "room.AAAAAAAAAAAAAAAA.+1.2.3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "room.AAAAAAAAAAAAAAAA.99999999999999999999999.2.3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "eyJhbGciOiJFZERTQSJ9..".into(),
        "eyJhbGciOiJFZERTQSJ9.e30.".into(),
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA".into(),
        "a.b.c".into(),
        "a.b.c.d".into(),
    ];
    // Deterministic pseudo-random bytes, lossily turned into text.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1usize, 7, 43, 100, 255, 256, 257, 1000, 5000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        v.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    v
}

/// A freshly generated key for `alg`.
pub(super) fn keys(alg: PassAlgorithm) -> PassKeys {
    let pem = match PassKeys::generate_pem(alg) {
        Ok(p) => p,
        Err(e) => panic!("generate: {e}"),
    };
    match PassKeys::from_pem(&pem, alg) {
        Ok(k) => k,
        Err(e) => panic!("from_pem: {e}"),
    }
}

/// An issuer for `rushgate` / `shop` with a fresh `alg` key.
pub(super) fn issuer(alg: PassAlgorithm) -> PassIssuer {
    PassIssuer::new(keys(alg), "rushgate", "shop")
}

/// A pass for `room` issued at `now` expiring at `exp`.
pub(super) fn issue(iss: &PassIssuer, room: &str, now: u64, exp: u64) -> String {
    match iss.issue(room, "uABCDEFGHIJKLMNO", 5, now, exp) {
        Ok(t) => t,
        Err(e) => panic!("issue: {e}"),
    }
}

/// Every supported pass algorithm.
pub(super) const ALGS: [PassAlgorithm; 2] = [PassAlgorithm::EdDSA, PassAlgorithm::ES256];
