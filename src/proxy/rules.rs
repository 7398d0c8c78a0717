//! Path rules of `protect` and `bypass`: prefixes and simple globs, matched against a
//! normalized path so that `//products/./drop` or `/products/%64rop` cannot dodge protection.

/// One `protect` or `bypass` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// No `*`: the path itself and every path below it (`/a` covers `/a` and `/a/b`, not `/ab`);
    /// a pattern ending in `/` covers every path starting with it.
    Prefix(String),
    /// With `*`: the whole path must match, each `*` standing for any run of characters
    /// (including `/`), so `*.css` covers `/a/b.css` and `/checkout/*` covers `/checkout/x/y`.
    Glob(Vec<String>),
}

impl Pattern {
    /// Parses a config entry; the error says what is wrong with it.
    pub(crate) fn parse(raw: &str) -> Result<Pattern, &'static str> {
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if !(raw.starts_with('/') || raw.starts_with('*')) {
            return Err("must start with '/' or '*'");
        }
        if raw.contains('?') || raw.contains('#') {
            return Err("matches the path only: no '?' or '#'");
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must not contain spaces or control characters");
        }
        if raw.contains('*') {
            Ok(Pattern::Glob(raw.split('*').map(str::to_string).collect()))
        } else {
            Ok(Pattern::Prefix(raw.to_string()))
        }
    }

    /// Whether a normalized path (see [`normalize`]) matches.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Prefix(p) if p.ends_with('/') => path.starts_with(p.as_str()),
            Pattern::Prefix(p) => {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            Pattern::Glob(parts) => glob_match(parts, path),
        }
    }
}

/// Matches `path` against the literal pieces between `*`s: the first piece anchors the start,
/// the last anchors the end, the middle ones are found left to right (greedy-free, linear).
fn glob_match(parts: &[String], path: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    let Some(mut rest) = path.strip_prefix(first.as_str()) else {
        return false;
    };
    let middle = &parts[1..parts.len().saturating_sub(1).max(1)];
    for piece in middle {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    parts.len() >= 2 && rest.len() >= last.len() && rest.ends_with(last.as_str())
}

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

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern)
            .map(|p| p.matches(&normalize(path)))
            .unwrap_or(false)
    }

    #[test]
    fn prefixes_cover_the_path_and_below_only() {
        assert!(m("/products/drop", "/products/drop"));
        assert!(m("/products/drop", "/products/drop/"));
        assert!(m("/products/drop", "/products/drop/size-9"));
        assert!(!m("/products/drop", "/products/dropship"));
        assert!(m("/checkout/", "/checkout/pay"));
        assert!(m("/", "/anything"));
    }

    #[test]
    fn globs_match_the_whole_path() {
        assert!(m("*.css", "/static/site.css"));
        assert!(!m("*.css", "/static/site.css.map"));
        assert!(m("/checkout/*", "/checkout/a/b"));
        assert!(!m("/checkout/*", "/checkoutx"));
        assert!(m("/a/*/c/*.js", "/a/b/c/d.js"));
        assert!(!m("/a/*/c/*.js", "/a/b/d.js"));
        assert!(m("*", "/x"));
        assert!(m("/x*y", "/xy"));
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

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("products").is_err());
        assert!(Pattern::parse("/a?b").is_err());
        assert!(Pattern::parse("/a b").is_err());
    }
}
