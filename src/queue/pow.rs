//! Proof-of-work challenges: stateless, HMAC-signed strings that a join must solve before it
//! makes a new place, and their one-hash verification.
//!
//! A challenge reads `{room}.{bits}.{expires}.{id}.{addr}.{mac}`: the room, the work asked (leading
//! zero bits), its expiry (unix seconds), 96 random bits naming it, a keyed hash of the client
//! address it was issued to, and `base64url(HMAC-SHA256(key, "rgpow1." + everything before the
//! last dot))`. Every character is cookie- and JSON-safe. A solution is a decimal nonce such that
//! `SHA-256(challenge ":" nonce)` starts with at least `bits` zero bits; checking it costs one
//! HMAC and one SHA-256, whatever the difficulty. The node keeps nothing per challenge: single
//! use is the caller's claim of [`Solved::id`] in the store, which every node shares.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::{Digest as _, Key, KeyInit};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::config::MAX_POW_BITS;
use crate::id::RoomId;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: mixed into the key derivation and into every MAC, so a challenge MAC can
/// never be a ticket MAC (`rgt1.`) or a user identity (`user:`) made with the same secret, nor
/// the other way round. The `1` versions the format.
const POW_PREFIX: &[u8] = b"rgpow1.";
/// What the address tag hashes after [`POW_PREFIX`], so it is never a challenge MAC either.
const ADDR_PREFIX: &[u8] = b"addr:";
/// How long a challenge can be solved: long enough for a slow phone at the ceiling difficulty,
/// short enough that a stockpile of solutions goes stale within two minutes.
pub const CHALLENGE_TTL_MS: u64 = 120_000;
/// Longest challenge looked at. A real one is at most 64 + 2 + 20 + 16 + 12 + 43 + 5 = 162
/// bytes; anything longer is refused before any hashing.
pub const MAX_CHALLENGE_LEN: usize = 256;
/// Longest nonce (`u64::MAX` has 20 digits).
pub const MAX_NONCE_LEN: usize = 20;
/// Random bytes naming a challenge (96 bits: no two challenges ever share an id).
const ID_BYTES: usize = 12;
/// Bytes of the keyed address hash carried in a challenge (72 bits, 12 characters).
const ADDR_BYTES: usize = 9;
/// Length of an unpadded base64url HMAC-SHA256 tag.
const MAC_B64_LEN: usize = 43;

/// A challenge handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The challenge text, solved as sent (at most [`MAX_CHALLENGE_LEN`] bytes, cookie-safe).
    pub text: String,
    /// Leading zero bits the solution's hash needs.
    pub difficulty: u8,
    /// When it stops being accepted, unix ms.
    pub expires_ms: u64,
}

/// A correct, unexpired solution of a challenge of this room and client. Not yet proof of
/// single use: the caller claims [`Solved::id`] until [`Solved::expires_ms`] in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The challenge's random id: unique per challenge, the key of its single-use claim.
    pub id: String,
    /// When the challenge expires (unix ms): a claim need not outlive it.
    pub expires_ms: u64,
    /// The work the solution did, in leading zero bits asked.
    pub difficulty: u8,
}

/// What a request for a place brings for the proof of work: the client address (challenges are
/// bound to it and pressure is counted by it) and the answer it carries, if any.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    /// The client address, as the rate limits see it (IPv6 by its /64).
    pub client: IpAddr,
    /// The solution sent with the request.
    pub answer: Option<Answer<'a>>,
}

/// A solution as a client sends it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The challenge text, as issued.
    pub challenge: &'a str,
    /// The nonce found, in decimal.
    pub nonce: &'a str,
}

/// Why a proof of work was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// The challenge or the nonce is not in the form rushgate issues (too long, wrong fields,
    /// a nonce that is not 1–20 decimal digits).
    #[error("malformed proof of work: the challenge must be as issued and the nonce 1 to 20 decimal digits")]
    Malformed,
    /// The challenge's MAC does not verify: not issued by this waiting room, or altered.
    #[error("the challenge was not issued by this waiting room or was altered")]
    BadMac,
    /// A genuine challenge of another room.
    #[error("the challenge was issued for room `{0}`")]
    WrongRoom(String),
    /// A genuine challenge issued to another client address.
    #[error("the challenge was issued to another client address; ask for a new one")]
    OtherAddress,
    /// A genuine challenge past its expiry.
    #[error("the challenge has expired; ask for a new one")]
    Expired,
    /// The nonce does not give a hash with enough leading zero bits.
    #[error("the nonce does not solve the challenge: SHA-256(challenge \":\" nonce) needs {0} leading zero bits")]
    NotEnoughWork(u8),
    /// The solution was already used to join (on this node or another).
    #[error("this solution has already been used to join; ask for a new challenge")]
    Replayed,
}

impl PowError {
    /// The metric label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            PowError::Malformed => "malformed",
            PowError::BadMac => "bad_mac",
            PowError::WrongRoom(_) => "wrong_room",
            PowError::OtherAddress => "other_address",
            PowError::Expired => "expired",
            PowError::NotEnoughWork(_) => "not_enough_work",
            PowError::Replayed => "replayed",
        }
    }

    /// Every label [`PowError::reason`] can give, so the refusal counters can start at 0.
    pub const REASONS: [&'static str; 7] = [
        "malformed",
        "bad_mac",
        "wrong_room",
        "other_address",
        "expired",
        "not_enough_work",
        "replayed",
    ];
}

/// Issues and verifies challenges. Cloning is cheap (one `Arc`); nodes built from the same
/// secret verify each other's challenges.
#[derive(Clone)]
pub struct Challenges {
    // Pre-keyed MAC state: cloning it per operation skips re-hashing the key pads.
    mac: Arc<HmacSha256>,
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl Challenges {
    /// Keyed with `SHA-256("rgpow1." ‖ secret)` (the ticket secret): a key of its own, derived
    /// so that no other MAC made with the secret can be mistaken for a challenge's.
    pub fn new(secret: &[u8]) -> Self {
        let derived = Sha256::new()
            .chain_update(POW_PREFIX)
            .chain_update(secret)
            .finalize();
        // A 32-byte key zero-padded to the block is exactly HMAC's own key handling, and the
        // fixed-size constructor cannot fail (`new_from_slice` would need an `expect`).
        let mut key = Key::<HmacSha256>::default();
        key.iter_mut()
            .zip(derived.iter())
            .for_each(|(k, d)| *k = *d);
        Self {
            mac: Arc::new(<HmacSha256 as KeyInit>::new(&key)),
        }
    }

    /// A new challenge for `room`, bound to `client`, asking `difficulty` leading zero bits
    /// (clamped to 1–32), valid for [`CHALLENGE_TTL_MS`] from `now_ms`.
    pub fn issue(&self, room: &RoomId, client: IpAddr, difficulty: u8, now_ms: u64) -> Challenge {
        let difficulty = difficulty.clamp(1, MAX_POW_BITS);
        let expires_s = now_ms.saturating_add(CHALLENGE_TTL_MS) / 1000;
        let mut id = [0u8; ID_BYTES];
        rand::thread_rng().fill_bytes(&mut id);
        let mut text = String::with_capacity(room.as_str().len() + 96);
        text.push_str(room.as_str());
        text.push('.');
        text.push_str(&difficulty.to_string());
        text.push('.');
        text.push_str(&expires_s.to_string());
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(id, &mut text);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(self.addr_tag(client), &mut text);
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(POW_PREFIX);
        mac.update(text.as_bytes());
        let tag = mac.finalize().into_bytes();
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut text);
        Challenge {
            text,
            difficulty,
            expires_ms: expires_s * 1000,
        }
    }

    /// Checks a solution: sizes and form first (nothing over [`MAX_CHALLENGE_LEN`] or a nonce
    /// that is not 1–20 digits is hashed), then the MAC in constant time, the room, the expiry
    /// and the client address, and last one SHA-256 of `challenge ":" nonce`. Never panics.
    /// Says nothing about earlier use: see [`Solved`].
    pub fn verify(
        &self,
        room: &RoomId,
        client: IpAddr,
        challenge: &str,
        nonce: &str,
        now_ms: u64,
    ) -> Result<Solved, PowError> {
        if challenge.len() > MAX_CHALLENGE_LEN
            || nonce.is_empty()
            || nonce.len() > MAX_NONCE_LEN
            || !nonce.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(PowError::Malformed);
        }
        let (message, tag_b64) = challenge.rsplit_once('.').ok_or(PowError::Malformed)?;
        let mut fields = message.split('.');
        let mut next = || fields.next().ok_or(PowError::Malformed);
        let (for_room, bits, expires, id, addr) = (next()?, next()?, next()?, next()?, next()?);
        if fields.next().is_some() || tag_b64.len() != MAC_B64_LEN {
            return Err(PowError::Malformed);
        }
        // 43 characters decode to 32 bytes; the decoder wants room for whole 4-char groups.
        let mut tag = [0u8; 36];
        let written = URL_SAFE_NO_PAD
            .decode_slice(tag_b64, &mut tag)
            .map_err(|_| PowError::Malformed)?;
        let tag = tag.get(..written).ok_or(PowError::Malformed)?;
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(POW_PREFIX);
        mac.update(message.as_bytes());
        mac.verify_slice(tag).map_err(|_| PowError::BadMac)?;

        // Signed by us, so well-formed; parsed defensively all the same.
        let difficulty: u8 = bits.parse().map_err(|_| PowError::Malformed)?;
        let expires_s: u64 = expires.parse().map_err(|_| PowError::Malformed)?;
        if for_room != room.as_str() {
            return Err(PowError::WrongRoom(for_room.chars().take(64).collect()));
        }
        let expires_ms = expires_s.saturating_mul(1000);
        if now_ms >= expires_ms {
            return Err(PowError::Expired);
        }
        // 12 characters decode to 9 bytes (the buffer as for the tag above).
        let mut held = [0u8; 12];
        let written = URL_SAFE_NO_PAD
            .decode_slice(addr, &mut held)
            .map_err(|_| PowError::Malformed)?;
        let held = held.get(..written).ok_or(PowError::Malformed)?;
        if !bool::from(held.ct_eq(&self.addr_tag(client))) {
            return Err(PowError::OtherAddress);
        }
        if leading_zero_bits(&work_hash(challenge, nonce)) < u32::from(difficulty) {
            return Err(PowError::NotEnoughWork(difficulty));
        }
        Ok(Solved {
            id: id.to_string(),
            expires_ms,
            difficulty,
        })
    }

    /// The keyed hash of a client address carried in a challenge: binds the challenge to the
    /// address without writing the address into it.
    fn addr_tag(&self, client: IpAddr) -> [u8; ADDR_BYTES] {
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(POW_PREFIX);
        mac.update(ADDR_PREFIX);
        match client.to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; ADDR_BYTES];
        out.iter_mut().zip(full.iter()).for_each(|(o, b)| *o = *b);
        out
    }
}

/// `SHA-256(challenge ":" nonce)`, the hash a solution is judged by.
pub fn work_hash(challenge: &str, nonce: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(b":")
        .chain_update(nonce.as_bytes())
        .finalize()
        .into()
}

/// Leading zero bits of `hash` (0–256).
pub fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for &b in hash {
        if b != 0 {
            return bits + b.leading_zeros();
        }
        bits += 8;
    }
    bits
}

/// The reference solver: the smallest nonce from 0 whose hash has `difficulty` leading zero
/// bits, by the same search the waiting page's worker runs. About `2^difficulty` hashes; for
/// tests, benchmarks and load generators, never called by the server.
pub fn solve(challenge: &str, difficulty: u8) -> u64 {
    (0..u64::MAX)
        .find(|n| leading_zero_bits(&work_hash(challenge, &n.to_string())) >= u32::from(difficulty))
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn solved(c: &Challenge) -> String {
        solve(&c.text, c.difficulty).to_string()
    }

    #[test]
    fn a_brute_forced_solution_verifies_once_per_check() {
        let pow = Challenges::new(b"ticket-secret");
        let c = pow.issue(&room("drop"), ip("203.0.113.7"), 8, NOW);
        assert_eq!(c.difficulty, 8);
        assert_eq!(c.expires_ms, NOW + CHALLENGE_TTL_MS);
        assert!(c.text.len() <= MAX_CHALLENGE_LEN);
        assert!(c
            .text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        let nonce = solved(&c);
        let ok = pow
            .verify(&room("drop"), ip("203.0.113.7"), &c.text, &nonce, NOW + 1)
            .unwrap();
        assert_eq!(ok.difficulty, 8);
        assert_eq!(ok.expires_ms, c.expires_ms);
        assert_eq!(ok.id.len(), 16);
        // Another challenge has another id: the claim keys never collide.
        let other = pow.issue(&room("drop"), ip("203.0.113.7"), 8, NOW);
        assert_ne!(other.text, c.text);
        let nonce2 = solved(&other);
        let ok2 = pow
            .verify(&room("drop"), ip("203.0.113.7"), &other.text, &nonce2, NOW)
            .unwrap();
        assert_ne!(ok.id, ok2.id);
        // Another node with the same secret accepts it; one with another secret does not.
        let twin = Challenges::new(b"ticket-secret");
        assert!(twin
            .verify(&room("drop"), ip("203.0.113.7"), &c.text, &nonce, NOW)
            .is_ok());
        let stranger = Challenges::new(b"other-secret");
        assert_eq!(
            stranger.verify(&room("drop"), ip("203.0.113.7"), &c.text, &nonce, NOW),
            Err(PowError::BadMac)
        );
    }

    #[test]
    fn a_wrong_nonce_is_not_enough_work() {
        let pow = Challenges::new(b"k");
        let c = pow.issue(&room("drop"), ip("10.0.0.1"), 16, NOW);
        // The first nonce that fails: at 16 bits nearly every nonce does.
        let wrong = (0..)
            .map(|n: u64| n.to_string())
            .find(|n| leading_zero_bits(&work_hash(&c.text, n)) < 16)
            .unwrap();
        assert_eq!(
            pow.verify(&room("drop"), ip("10.0.0.1"), &c.text, &wrong, NOW),
            Err(PowError::NotEnoughWork(16))
        );
    }

    #[test]
    fn tampered_foreign_expired_and_misaddressed_challenges_are_refused() {
        let pow = Challenges::new(b"k");
        let client = ip("198.51.100.20");
        let c = pow.issue(&room("drop"), client, 4, NOW);
        let nonce = solved(&c);
        // Lowering the difficulty (or any other edit) breaks the MAC.
        let lowered = c.text.replacen(".4.", ".1.", 1);
        assert_ne!(lowered, c.text);
        assert_eq!(
            pow.verify(&room("drop"), client, &lowered, &nonce, NOW),
            Err(PowError::BadMac)
        );
        for (i, ch) in c.text.char_indices() {
            let repl = if ch == 'A' { 'B' } else { 'A' };
            let mut t = c.text.clone();
            t.replace_range(i..i + 1, repl.encode_utf8(&mut [0; 4]));
            assert!(
                pow.verify(&room("drop"), client, &t, &nonce, NOW).is_err(),
                "accepted {t}"
            );
        }
        assert_eq!(
            pow.verify(&room("other"), client, &c.text, &nonce, NOW),
            Err(PowError::WrongRoom("drop".into()))
        );
        assert_eq!(
            pow.verify(&room("drop"), ip("198.51.100.21"), &c.text, &nonce, NOW),
            Err(PowError::OtherAddress)
        );
        assert_eq!(
            pow.verify(&room("drop"), client, &c.text, &nonce, c.expires_ms),
            Err(PowError::Expired)
        );
        assert!(pow
            .verify(&room("drop"), client, &c.text, &nonce, c.expires_ms - 1)
            .is_ok());
        // An IPv4 client seen as IPv4-mapped IPv6 is the same client.
        let mapped = ip("::ffff:198.51.100.20");
        assert!(pow
            .verify(&room("drop"), mapped, &c.text, &nonce, NOW)
            .is_ok());
    }

    #[test]
    fn malformed_input_is_refused_before_hashing_and_never_panics() {
        let pow = Challenges::new(b"k");
        let c = pow.issue(&room("drop"), ip("10.0.0.1"), 1, NOW);
        let drop = room("drop");
        let client = ip("10.0.0.1");
        for nonce in ["", "-1", "1.5", " 1", "0x10", "123456789012345678901", "１"] {
            assert_eq!(
                pow.verify(&drop, client, &c.text, nonce, NOW),
                Err(PowError::Malformed),
                "{nonce:?}"
            );
        }
        let long = format!("{}{}", c.text, "A".repeat(MAX_CHALLENGE_LEN));
        assert_eq!(
            pow.verify(&drop, client, &long, "1", NOW),
            Err(PowError::Malformed)
        );
        let (message, _) = c.text.rsplit_once('.').unwrap();
        for bad in [
            message.to_string(),
            format!("{message}.x.{}", "A".repeat(43)),
            format!("{message}.{}", "A".repeat(42)),
            format!("{message}.{}", "*".repeat(43)),
            format!("a.b.{}", "A".repeat(43)),
        ] {
            assert_eq!(
                pow.verify(&drop, client, &bad, "1", NOW),
                Err(PowError::Malformed),
                "{bad}"
            );
        }
        let weird = [
            String::new(),
            ".".repeat(5),
            ".".repeat(10_000),
            "é.ü.€.𝄞.\u{0}.\u{FFFD}".into(),
            "🦀.🦀.🦀.🦀.🦀.🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀".into(),
            format!(
                "drop.1.9999999999999999999999.AAAAAAAAAAAAAAAA.AAAAAAAAAAAA.{}",
                "A".repeat(43)
            ),
            format!(
                "drop.300.1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAA.{}",
                "A".repeat(43)
            ),
        ];
        for input in weird {
            assert!(pow.verify(&drop, client, &input, "1", NOW).is_err());
            assert!(pow.verify(&drop, client, &c.text, &input, NOW).is_err());
        }
    }

    #[test]
    fn difficulty_is_clamped_and_zero_bits_count_right() {
        let pow = Challenges::new(b"k");
        assert_eq!(pow.issue(&room("a"), ip("::1"), 0, NOW).difficulty, 1);
        assert_eq!(pow.issue(&room("a"), ip("::1"), 200, NOW).difficulty, 32);
        assert_eq!(leading_zero_bits(&[0, 0, 0x10, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
        let longest = pow.issue(&room(&"r".repeat(64)), ip("::1"), 32, u64::MAX / 2);
        assert!(longest.text.len() <= MAX_CHALLENGE_LEN, "{}", longest.text);
    }

    #[test]
    fn debug_is_redacted() {
        let dbg = format!("{:?}", Challenges::new(b"super-secret"));
        assert!(dbg.contains("[REDACTED]") && !dbg.contains("super-secret"));
    }

    #[test]
    fn refusal_reasons_are_all_listed() {
        for e in [
            PowError::Malformed,
            PowError::BadMac,
            PowError::WrongRoom("x".into()),
            PowError::OtherAddress,
            PowError::Expired,
            PowError::NotEnoughWork(3),
            PowError::Replayed,
        ] {
            assert!(PowError::REASONS.contains(&e.reason()), "{e}");
        }
    }
}
