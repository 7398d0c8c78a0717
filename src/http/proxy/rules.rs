//! Path normalization for the `protect` and `bypass` rules: the rules
//! ([`Pattern`](crate::config::Pattern), parsed by config) are matched against a normalized
//! path so that `//products/./drop` or `/products/%64rop` cannot dodge protection.

/// The path as the shop will most likely see it: percent-decoded, `.`/`..` resolved, repeated
/// slashes collapsed. Rules are matched against this; the request is forwarded unchanged.
pub(crate) fn normalize(raw: &str) -> String {
    let decoded = percent_decode(raw);
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
            .map(|p| p.matches(&normalize(path)))
            .unwrap_or(false)
    }

    #[test]
    fn normalization_defeats_dodges() {
        assert_eq!(normalize("//products/./drop"), "/products/drop");
        assert_eq!(normalize("/products/%64rop"), "/products/drop");
        assert_eq!(normalize("/x/../products/drop"), "/products/drop");
        assert_eq!(normalize("/../../etc"), "/etc");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/a/"), "/a/");
        assert_eq!(normalize("/%zz%4"), "/%zz%4");
        assert!(m("/products/drop", "/products//drop"));
    }
}
