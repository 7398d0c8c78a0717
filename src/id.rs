//! Typed ids with the one id rule. Room, sale and coupon-campaign ids are `[a-z0-9_-]{1,64}`:
//! safe inside Redis keys (between the `{...}` hash-tag braces), URL path segments and cookie
//! names, so every layer can use them unescaped. Parsed once at the edge (config, route, CLI);
//! inner code takes the typed value.

use std::fmt;

/// Whether `id` satisfies the id rule: 1 to 64 bytes of `[a-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A newtype over an id that follows the id rule.
macro_rules! config_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses an id; `None` when it has characters outside `[a-z0-9_-]` or a bad length.
            pub fn parse(id: &str) -> Option<$name> {
                is_valid_id(id).then(|| $name(id.to_string()))
            }

            /// The id text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

config_id!(
    /// A validated room id, safe inside store keys, URLs and cookie names.
    RoomId
);
config_id!(
    /// A validated sale id, safe inside store keys and URLs; it also starts every id of the
    /// sale's reservations.
    SaleId
);
config_id!(
    /// A validated coupon-campaign id, safe inside store keys and URLs.
    CampaignId
);

/// Length of a shopper identity.
pub const IDENTITY_LEN: usize = 16;

/// A shopper's identity in a room: the store's queue member, a ticket's `id` and a pass's
/// `sub`. Exactly [`IDENTITY_LEN`] characters of `[A-Za-z0-9_-]` (cookie- and ticket-safe: never
/// the ticket's `.` separator). Minted by `pass::TicketSigner` (an HMAC of the shop's user key,
/// or random) or read back from a verified ticket; it reads as its text (`&str`) where the store
/// takes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

impl Identity {
    /// Parses an identity; `None` unless it is exactly [`IDENTITY_LEN`] of `[A-Za-z0-9_-]`.
    pub fn parse(text: &str) -> Option<Identity> {
        let ok = text.len() == IDENTITY_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Identity(text.to_string()))
    }

    /// The identity text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An identity made by rushgate itself (the ticket signer), which guarantees the rule.
    pub(crate) fn minted(text: String) -> Identity {
        debug_assert!(Identity::parse(&text).is_some(), "minted identity {text:?}");
        Identity(text)
    }
}

impl std::ops::Deref for Identity {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest accepted part of a reservation id after its sale's id.
const MAX_RESERVATION_SUFFIX: usize = 64;

/// A reservation id as a client sends it back: `{sale}.{suffix}` (rushgate makes the suffix 32
/// hex digits; any 1 to 64 of `[A-Za-z0-9_-]` is accepted, so a malformed id is simply unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId {
    text: String,
    sale_len: usize,
}

impl ReservationId {
    /// Parses an id; `None` when its sale part breaks the id rule or its suffix is empty, too
    /// long or has other characters.
    pub fn parse(id: &str) -> Option<ReservationId> {
        let (sale, suffix) = id.split_once('.')?;
        let suffix_ok = !suffix.is_empty()
            && suffix.len() <= MAX_RESERVATION_SUFFIX
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (is_valid_id(sale) && suffix_ok).then(|| ReservationId {
            text: id.to_string(),
            sale_len: sale.len(),
        })
    }

    /// The id of the sale the reservation belongs to.
    pub fn sale(&self) -> &str {
        &self.text[..self.sale_len]
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_rule() {
        assert!(RoomId::parse("summer-drop_1").is_some());
        for bad in ["", "Upper", "a b", "a/b", "{x}", &"a".repeat(65)] {
            assert!(RoomId::parse(bad).is_none(), "{bad:?}");
            assert!(SaleId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(is_valid_id(&"a".repeat(64)));
    }

    #[test]
    fn identities_are_sixteen_ticket_safe_characters() {
        assert!(Identity::parse("aBc-_0123456789x").is_some());
        for bad in [
            "",
            "short",
            "aBc-_0123456789xy",
            "aBc.-0123456789x",
            "aBc -0123456789x",
        ] {
            assert!(Identity::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn reservation_ids_name_their_sale() {
        let id = ReservationId::parse("sneakers.0123456789abcdef0123456789abcdef");
        assert_eq!(id.as_ref().map(ReservationId::sale), Some("sneakers"));
        for bad in [
            "",
            "sneakers",
            "sneakers.",
            ".abc",
            "Sneakers.abc",
            "s.a/b",
            "s.a.b",
        ] {
            assert!(ReservationId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
