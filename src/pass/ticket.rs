//! Queue tickets: the HMAC-SHA256 signed `room.id.seq.iat.pos[.gen.uid].sig` strings a
//! waiter holds while queued, checked on every poll without JSON and with few allocations,
//! and the waiter identities (per shop user, or anonymous) they carry.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::{Digest as _, Key, KeyInit};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

use super::{TokenError, UserId};
use crate::id::{Identity, IDENTITY_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Domain-separation prefix mixed into every ticket MAC, so a MAC computed for
/// another purpose with the same secret (e.g. [`TicketSigner::user_identity`])
/// can never be replayed as a ticket signature. The `1` versions the format.
const TICKET_MAC_PREFIX: &[u8] = b"rgt1.";
/// Domain-separation prefix for user identities (see [`TICKET_MAC_PREFIX`]).
const USER_MAC_PREFIX: &[u8] = b"user:";
/// Longest ticket we are willing to look at. A real ticket is at most
/// 64 + 16 + 3 * 20 + 10 + 342 (a 256-byte user id in base64url) + 43 + 7 = 542 bytes;
/// anything longer is rejected before any work.
pub const MAX_TICKET_LEN: usize = 560;
/// Length of an unpadded base64url HMAC-SHA256 tag.
const TICKET_SIG_B64_LEN: usize = 43;
/// Longest room id accepted inside a ticket.
const MAX_ROOM_LEN: usize = 64;

/// Claims of a queue ticket. Ticket = what a waiter holds while waiting.
///
/// For a ticket to round-trip, `room` must match `[a-z0-9_-]{1,64}` and `id`
/// must match `[A-Za-z0-9_-]{16}`; [`TicketSigner::verify`] rejects anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketClaims {
    /// Room the waiter joined.
    pub room: String,
    /// Waiter identity ([`TicketSigner::user_identity`] or [`TicketSigner::anonymous_identity`]).
    pub id: Identity,
    /// Queue sequence number assigned at join.
    pub seq: u64,
    /// Join time, unix seconds.
    pub iat: u64,
    /// Position in the queue at join.
    pub pos: u64,
    /// Holder generation: the place's holder count when this ticket was made. Moving the
    /// place to another device or ending its session raises the place's generation, and a
    /// ticket of an older one stops working (0 for a place never moved).
    pub gen: u32,
    /// The shop's user id, when the shopper joined with a shop-signed user token.
    pub uid: Option<UserId>,
}

impl TicketClaims {
    /// `pos` of a pending ticket (with `seq` 0): the ticket of a join the store did not
    /// answer. It names the identity the join was for, so presenting it again finds the place
    /// that join may have made instead of making a second one.
    pub const PENDING: u64 = u64::MAX;

    /// Whether this is a pending ticket ([`TicketClaims::PENDING`]).
    pub fn is_pending(&self) -> bool {
        self.seq == 0 && self.pos == Self::PENDING
    }
}

/// HMAC-SHA256 signer/verifier of tickets. Cloning is cheap (one `Arc`).
///
/// The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct TicketSigner {
    // Pre-keyed MAC state: cloning it per operation skips re-hashing the key pads.
    mac: Arc<HmacSha256>,
}

impl fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketSigner")
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl TicketSigner {
    /// Creates a signer keyed with `secret` (any length; use at least 32 random bytes).
    /// Tokens signed by signers built from equal secrets verify on each other.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC (RFC 2104) hashes keys longer than the block and zero-pads the rest.
        // Doing that here lets us use the infallible fixed-size constructor instead
        // of `new_from_slice`, whose `Result` can never be `Err` but would otherwise
        // need an `expect`.
        let mut key = Key::<HmacSha256>::default();
        if secret.len() > key.len() {
            let digest = Sha256::digest(secret);
            key.iter_mut().zip(digest.iter()).for_each(|(k, d)| *k = *d);
        } else {
            key.iter_mut().zip(secret.iter()).for_each(|(k, s)| *k = *s);
        }
        Self {
            mac: Arc::new(<HmacSha256 as KeyInit>::new(&key)),
        }
    }

    /// Signs `t` as `{room}.{id}.{seq}.{iat}.{pos}.{sig}`, or, for a moved place or a
    /// shopper the shop vouched for, `{room}.{id}.{seq}.{iat}.{pos}.{gen}.{uid}.{sig}` (`uid`
    /// in base64url, empty for none), where
    /// `sig = base64url-nopad(HMAC-SHA256(secret, "rgt1." + everything before the last dot))`.
    ///
    /// The output contains only cookie-safe characters provided `room` and `id`
    /// follow the documented charsets; claims outside them produce a token that
    /// [`TicketSigner::verify`] rejects as [`TokenError::Malformed`].
    pub fn sign(&self, t: &TicketClaims) -> String {
        let mut out = format!("{}.{}.{}.{}.{}", t.room, t.id, t.seq, t.iat, t.pos);
        if t.gen != 0 || t.uid.is_some() {
            out.push('.');
            out.push_str(&t.gen.to_string());
            out.push('.');
            if let Some(uid) = &t.uid {
                URL_SAFE_NO_PAD.encode_string(uid.as_str(), &mut out);
            }
        }
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(TICKET_MAC_PREFIX);
        mac.update(out.as_bytes());
        let tag = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Verifies a ticket and returns its claims.
    ///
    /// Never panics. Inputs longer than [`MAX_TICKET_LEN`], with the wrong number of
    /// fields, bad charsets, non-decimal numbers or a badly encoded tag are
    /// [`TokenError::Malformed`]; a well-formed ticket whose MAC does not match
    /// (checked in constant time) is [`TokenError::BadSignature`]. Only the two
    /// returned `String`s are allocated.
    pub fn verify(&self, token: &str) -> Result<TicketClaims, TokenError> {
        if token.len() > MAX_TICKET_LEN {
            return Err(TokenError::Malformed);
        }
        let (message, sig_b64) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut fields = message.split('.');
        let mut next = || fields.next().ok_or(TokenError::Malformed);
        let room = next()?;
        let id = next()?;
        let seq = next()?;
        let iat = next()?;
        let pos = next()?;
        let (gen, uid) = match (fields.next(), fields.next()) {
            (None, _) => (None, None),
            (Some(gen), Some(uid)) => (Some(gen), Some(uid)),
            (Some(_), None) => return Err(TokenError::Malformed),
        };
        if fields.next().is_some() {
            return Err(TokenError::Malformed);
        }
        if !is_room_id(room) {
            return Err(TokenError::Malformed);
        }
        let id = Identity::parse(id).ok_or(TokenError::Malformed)?;
        let seq = parse_decimal(seq)?;
        let iat = parse_decimal(iat)?;
        let pos = parse_decimal(pos)?;
        let gen = match gen {
            Some(g) => u32::try_from(parse_decimal(g)?).map_err(|_| TokenError::Malformed)?,
            None => 0,
        };
        let uid = match uid {
            Some("") | None => None,
            Some(b64) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(b64)
                    .map_err(|_| TokenError::Malformed)?;
                let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed)?;
                Some(UserId::parse(text).ok_or(TokenError::Malformed)?)
            }
        };

        if sig_b64.len() != TICKET_SIG_B64_LEN {
            return Err(TokenError::Malformed);
        }
        // 43 chars decode to exactly 32 bytes; the buffer is larger only because the
        // decoder's length estimate rounds up to whole 4-char groups (33 bytes).
        let mut sig = [0u8; 36];
        let written = URL_SAFE_NO_PAD
            .decode_slice(sig_b64, &mut sig)
            .map_err(|_| TokenError::Malformed)?;
        let sig = sig.get(..written).ok_or(TokenError::Malformed)?;
        if sig.len() != 32 {
            return Err(TokenError::Malformed);
        }

        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(TICKET_MAC_PREFIX);
        mac.update(message.as_bytes());
        mac.verify_slice(sig)
            .map_err(|_| TokenError::BadSignature)?;

        Ok(TicketClaims {
            room: room.to_owned(),
            id,
            seq,
            iat,
            pos,
            gen,
            uid,
        })
    }

    /// Stable identity for a shop user key: `"u"` + the first 15 characters of
    /// `base64url(HMAC(secret, "user:" + user))`. Always 16 cookie-safe characters;
    /// the same user maps to the same id on every node sharing the secret, and the
    /// user key cannot be recovered from it.
    pub fn user_identity(&self, user: &str) -> Identity {
        let mut mac = HmacSha256::clone(&self.mac);
        mac.update(USER_MAC_PREFIX);
        mac.update(user.as_bytes());
        let tag = mac.finalize().into_bytes();
        identity_from_bytes('u', &tag)
    }

    /// Random identity for an anonymous waiter: `"a"` + 15 base64url characters
    /// (90 bits) from the thread-local CSPRNG (ChaCha seeded from the OS).
    /// Always 16 cookie-safe characters.
    pub fn anonymous_identity() -> Identity {
        let mut bytes = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut bytes);
        identity_from_bytes('a', &bytes)
    }
}

/// `prefix` + first 15 base64url chars of `bytes` (which must hold ≥ 12 bytes;
/// 12 bytes encode to exactly 16 chars, so encoding only those gives the same
/// prefix as encoding everything).
fn identity_from_bytes(prefix: char, bytes: &[u8]) -> Identity {
    let head = bytes.get(..12).unwrap_or(bytes);
    let mut out = String::with_capacity(IDENTITY_LEN + 1);
    out.push(prefix);
    URL_SAFE_NO_PAD.encode_string(head, &mut out);
    out.truncate(IDENTITY_LEN);
    // A prefix and 15 characters of the base64url alphabet: always an identity.
    Identity::minted(out)
}

fn is_room_id(s: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Strict decimal: digits only (no sign, no whitespace), must fit in u64.
fn parse_decimal(s: &str) -> Result<u64, TokenError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::pass::fixtures::{weird_inputs, NOW};

    fn claims() -> TicketClaims {
        TicketClaims {
            room: "drop-42_a".to_owned(),
            id: TicketSigner::anonymous_identity(),
            seq: 1234,
            iat: NOW,
            pos: 77,
            gen: 0,
            uid: None,
        }
    }

    #[test]
    fn ticket_roundtrip() {
        let s = TicketSigner::new(b"0123456789abcdef0123456789abcdef");
        let c = claims();
        let tok = s.sign(&c);
        assert!(tok
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(tok.split('.').count(), 6);
        assert_eq!(s.verify(&tok), Ok(c));

        let big = TicketClaims {
            room: "r".repeat(64),
            id: Identity::parse(&"u".repeat(16)).unwrap(),
            seq: u64::MAX,
            iat: u64::MAX,
            pos: u64::MAX,
            gen: u32::MAX,
            uid: UserId::parse(&"\u{10FFFF}".repeat(64)),
        };
        assert_eq!(big.uid.as_ref().map(|u| u.as_str().len()), Some(256));
        let tok = s.sign(&big);
        assert!(tok.len() <= MAX_TICKET_LEN, "{}", tok.len());
        assert_eq!(tok.split('.').count(), 8);
        assert_eq!(s.verify(&tok), Ok(big));
    }

    #[test]
    fn moved_or_vouched_tickets_carry_generation_and_user_id() {
        let s = TicketSigner::new(b"0123456789abcdef0123456789abcdef");
        let moved = TicketClaims { gen: 3, ..claims() };
        let tok = s.sign(&moved);
        assert_eq!(tok.split('.').count(), 8);
        assert_eq!(s.verify(&tok), Ok(moved.clone()));
        let vouched = TicketClaims {
            uid: UserId::parse("customer 17.eu"),
            ..claims()
        };
        let tok = s.sign(&vouched);
        assert_eq!(s.verify(&tok), Ok(vouched));
        // Seven fields (a generation without its uid field) is not a ticket.
        let plain = s.sign(&claims());
        let (msg, _) = plain.rsplit_once('.').unwrap();
        assert_eq!(s.verify(&format!("{msg}.1.x")), Err(TokenError::Malformed));
    }

    #[test]
    fn ticket_any_flipped_char_fails() {
        let s = TicketSigner::new(b"secret-secret-secret-secret-1234");
        let tok = s.sign(&claims());
        for (i, ch) in tok.char_indices() {
            for repl in ['A', 'B', '0', '.', '-'] {
                if repl == ch {
                    continue;
                }
                let mut t = tok.clone();
                t.replace_range(i..i + 1, repl.encode_utf8(&mut [0; 4]));
                assert!(s.verify(&t).is_err(), "accepted {t} (pos {i})");
            }
        }
        // Truncation and extension fail too.
        assert!(s.verify(&tok[..tok.len() - 1]).is_err());
        assert!(s.verify(&format!("{tok}A")).is_err());
    }

    #[test]
    fn ticket_other_secret_is_bad_signature() {
        let a = TicketSigner::new(b"secret-a");
        let b = TicketSigner::new(b"secret-b");
        let tok = a.sign(&claims());
        assert_eq!(b.verify(&tok), Err(TokenError::BadSignature));
    }

    #[test]
    fn ticket_structural_errors_are_malformed() {
        let s = TicketSigner::new(b"k");
        let good = s.sign(&claims());
        let sig = good.rsplit_once('.').map(|(_, s)| s).unwrap_or_default();
        for bad in [
            format!("Room.AAAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.+1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.1.2.3.4.{sig}"),
            format!(".AAAAAAAAAAAAAAAA.1.2.3.{sig}"),
            format!("room.AAAAAAAAAAAAAAAA.18446744073709551616.2.3.{sig}"),
            "x".repeat(MAX_TICKET_LEN + 1),
        ] {
            assert_eq!(s.verify(&bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn ticket_verify_never_panics() {
        let s = TicketSigner::new(b"k");
        for input in weird_inputs() {
            assert!(s.verify(&input).is_err());
        }
    }

    #[test]
    fn hmac_key_normalisation_matches_new_from_slice() {
        for secret in [&b""[..], b"short", &[7u8; 64], &[9u8; 65], &[1u8; 200]] {
            let ours = TicketSigner::new(secret);
            let mut reference = match <HmacSha256 as KeyInit>::new_from_slice(secret) {
                Ok(m) => m,
                Err(e) => panic!("{e}"),
            };
            reference.update(b"user:bob");
            let expected = reference.finalize().into_bytes();
            let mut m = HmacSha256::clone(&ours.mac);
            m.update(b"user:bob");
            assert_eq!(m.finalize().into_bytes(), expected, "len {}", secret.len());
        }
    }

    #[test]
    fn identities() {
        let s = TicketSigner::new(b"k1");
        let id = s.user_identity("customer-17");
        assert_eq!(id.len(), IDENTITY_LEN);
        assert!(id.starts_with('u'));
        assert!(Identity::parse(&id).is_some());
        assert_eq!(id, s.user_identity("customer-17"));
        assert_eq!(id, TicketSigner::new(b"k1").user_identity("customer-17"));
        assert_ne!(id, s.user_identity("customer-18"));
        assert_ne!(id, TicketSigner::new(b"k2").user_identity("customer-17"));

        let a = TicketSigner::anonymous_identity();
        let b = TicketSigner::anonymous_identity();
        assert_ne!(a, b);
        assert_eq!(a.len(), IDENTITY_LEN);
        assert!(a.starts_with('a'));
        assert!(Identity::parse(&a).is_some());
        let many: std::collections::HashSet<Identity> = (0..1000)
            .map(|_| TicketSigner::anonymous_identity())
            .collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn ticket_signer_debug_is_redacted() {
        let dbg = format!("{:?}", TicketSigner::new(b"super-secret"));
        assert!(dbg.contains("[REDACTED]"));
        assert!(!dbg.contains("super-secret"));
    }
}
