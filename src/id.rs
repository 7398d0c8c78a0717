//! Typed ids with the one id rule. Room, sale and coupon ids are `[a-z0-9_-]{1,64}`: safe inside
//! Redis keys (between the `{...}` hash-tag braces), URL path segments and cookie names, so
//! every layer can use them unescaped. Parsed once at the edge (config, route); inner code takes
//! the typed value.

use std::fmt;

/// Whether `id` satisfies the id rule: 1 to 64 bytes of `[a-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A validated room id (`[a-z0-9_-]{1,64}`), safe inside store keys, URLs and cookie names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Parses an id; `None` when it has characters outside `[a-z0-9_-]` or a bad length.
    pub fn parse(id: &str) -> Option<RoomId> {
        is_valid_id(id).then(|| RoomId(id.to_string()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
        }
        assert!(is_valid_id(&"a".repeat(64)));
    }
}
