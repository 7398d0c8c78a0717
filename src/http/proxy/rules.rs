//! One path, seen one way: the proxy judges a request's path by the `protect` and `bypass`
//! rules ([`Pattern`](crate::config::Pattern), parsed by config) in one canonical form and
//! forwards exactly that form, so no spelling (`//products/./drop`, `/products/%64rop`,
//! `/products/x/..`) means one thing to the rules and another to the shop. What shops parse in
//! different ways (`;` parameters, backslashes, control characters, an encoded `/`, `\`, `.`,
//! `?` or `#`, a broken escape) is refused instead ([`PathRefused`]).

/// Why a path is refused with 400 `ambiguous-path`: web frameworks read it in different ways,
/// so the rules could judge one path and the shop serve another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    /// A `\` (raw or `%5C`): some servers take it for `/`.
    #[error("the path holds a backslash, which some servers read as `/`")]
    Backslash,
    /// A control character or NUL (raw or encoded).
    #[error("the path holds a control character or NUL")]
    Control,
    /// An encoded `/`, `.`, `?` or `#` (`%2F`, `%2E`, `%3F`, `%23`).
    #[error("the path holds an encoded `/`, `.`, `?` or `#`, which servers decode differently")]
    EncodedDelimiter,
    /// A `;` (raw or `%3B`): path parameters, stripped by some servers (Tomcat, Spring).
    #[error("the path holds a `;` (path parameters), which some servers strip; this room does not allow them")]
    PathParameter,
    /// A `%` not followed by two hex digits.
    #[error("the path holds a `%` that is not followed by two hex digits")]
    BrokenEscape,
}

/// The canonical form of a request path, the one the rules judge and the shop receives:
/// escapes of unreserved characters decoded (`%64` → `d`), other escapes kept with upper-case
/// hex, `.` and `..` segments resolved and repeated slashes collapsed (a trailing slash kept).
/// `;` is accepted only with `parameters` (the room's `allow_path_parameters`).
pub fn canonical(raw: &str, parameters: bool) -> Result<String, PathRefused> {
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(PathRefused::Backslash),
            b';' if !parameters => return Err(PathRefused::PathParameter),
            b if b < 0x20 || b == 0x7f => return Err(PathRefused::Control),
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathRefused::BrokenEscape);
                };
                let c = h * 16 + l;
                match c {
                    b'\\' => return Err(PathRefused::Backslash),
                    b'/' | b'.' | b'?' | b'#' => return Err(PathRefused::EncodedDelimiter),
                    b';' => return Err(PathRefused::PathParameter),
                    c if c < 0x20 || c == 0x7f => return Err(PathRefused::Control),
                    c if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'~' => {
                        decoded.push(char::from(c));
                    }
                    c => {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
                    }
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        // Any other byte as sent (the request line is ASCII; a multi-byte UTF-8 sequence is
        // copied whole, byte by byte, below).
        let len = utf8_len(b);
        decoded.push_str(raw.get(i..i + len).unwrap_or("\u{fffd}"));
        i += len;
    }
    Ok(normalize(&decoded))
}

/// Length of the UTF-8 sequence a byte starts (1 for ASCII and stray continuation bytes).
fn utf8_len(b: u8) -> usize {
    match b {
        0xf0..=0xf7 => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// `.`/`..` segments resolved and repeated slashes collapsed (a trailing slash kept).
fn normalize(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    out
}

/// Decodes `%XX` escapes (invalid ones stay as they are; invalid UTF-8 becomes U+FFFD).
/// The raw (still percent-encoded) value of query parameter `name` of `uri`, first match.
pub(crate) fn query_param<'a>(uri: &'a http::Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `s` percent-encoded for a query value: unreserved characters and `/` stay, everything else
/// becomes `%XX` (the inverse of [`percent_decode`]).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pattern;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern)
            .map(|p| canonical(path, false).is_ok_and(|c| p.matches(&c)))
            .unwrap_or(false)
    }

    #[test]
    fn one_canonical_form_per_path() {
        let c = |p: &str| canonical(p, false);
        assert_eq!(c("//products/./drop"), Ok("/products/drop".into()));
        assert_eq!(c("/products/%64rop"), Ok("/products/drop".into()));
        assert_eq!(c("/x/../products/drop"), Ok("/products/drop".into()));
        assert_eq!(c("/products/x/.."), Ok("/products".into()));
        assert_eq!(c("/../../etc"), Ok("/etc".into()));
        assert_eq!(c(""), Ok("/".into()));
        assert_eq!(c("/a/"), Ok("/a/".into()));
        assert_eq!(c("/caf%c3%a9"), Ok("/caf%C3%A9".into()));
        assert_eq!(c("/a%20b"), Ok("/a%20b".into()));
        assert!(m("/products/drop", "/products//drop"));
    }

    #[test]
    fn what_servers_read_differently_is_refused() {
        let c = |p: &str| canonical(p, false);
        for (path, why) in [
            ("/products/x;.css", PathRefused::PathParameter),
            ("/products/x%3b.css", PathRefused::PathParameter),
            ("/products/x/%2e%2e", PathRefused::EncodedDelimiter),
            ("/products/x%2ecss", PathRefused::EncodedDelimiter),
            ("/products/x%3f.css", PathRefused::EncodedDelimiter),
            ("/products/x%23.css", PathRefused::EncodedDelimiter),
            ("/products%2fx", PathRefused::EncodedDelimiter),
            ("/products\\x", PathRefused::Backslash),
            ("/products%5cx", PathRefused::Backslash),
            ("/products/x%00.css", PathRefused::Control),
            ("/products/x\u{1}", PathRefused::Control),
            ("/%zz", PathRefused::BrokenEscape),
            ("/a%4", PathRefused::BrokenEscape),
        ] {
            assert_eq!(c(path), Err(why), "{path}");
        }
        // A room that allows path parameters keeps them (matched as part of the path).
        assert_eq!(
            canonical("/products/x;jsessionid=1", true),
            Ok("/products/x;jsessionid=1".into())
        );
    }
}
