//! Value rules of a room's proxy fields, parsed here once and used by the reverse proxy: the
//! `upstream` ([`Upstream`]: `builtin:demo` or an `http://host:port` URL), the `protect` and
//! `bypass` path rules ([`Pattern`]), and the `{{placeholder}}` syntax of a waiting-page template
//! ([`fill`], [`check_template`], [`read_template`]).

use std::path::Path;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};

use super::RoomConfig;

/// The value of `upstream` that selects the built-in demo shop.
pub const DEMO_UPSTREAM: &str = "builtin:demo";

/// A room's parsed `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// [`DEMO_UPSTREAM`]: the demo shop served by rushgate itself.
    Demo,
    /// A shop reached over HTTP, or HTTPS when [`UpstreamUrl::tls`].
    Http(UpstreamUrl),
}

impl Upstream {
    /// Parses an `upstream` value: [`DEMO_UPSTREAM`] or what [`UpstreamUrl::parse`] accepts;
    /// the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Upstream, &'static str> {
        if raw == DEMO_UPSTREAM {
            Ok(Upstream::Demo)
        } else {
            UpstreamUrl::parse(raw).map(Upstream::Http)
        }
    }
}

/// An `http://host[:port]` or `https://host[:port]` upstream: an authority without
/// credentials, no path (but `/`) and no query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    authority: Authority,
    host: HeaderValue,
    tls: bool,
}

impl UpstreamUrl {
    /// Parses `http(s)://host[:port]` (a trailing `/` is allowed, nothing else after the
    /// authority).
    pub fn parse(raw: &str) -> Result<UpstreamUrl, &'static str> {
        const EXAMPLE: &str =
            "must be `builtin:demo` or a URL like http://127.0.0.1:3000 or https://shop.internal";
        let uri: Uri = raw.parse().map_err(|_| EXAMPLE)?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(EXAMPLE);
        };
        let tls = if scheme == &Scheme::HTTPS {
            true
        } else if scheme == &Scheme::HTTP {
            false
        } else {
            return Err("must start with http:// or https://");
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must be scheme and host only (http://host:port), without a path");
        }
        if authority.as_str().contains('@') {
            return Err("must not contain credentials");
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "must have a host that is a valid header value")?;
        Ok(UpstreamUrl {
            authority: authority.clone(),
            host,
            tls,
        })
    }

    /// The `host[:port]` as written.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header the shop is sent: the authority as written.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// Whether the shop is reached over TLS (`https://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host name (or IP address, without brackets) the shop's certificate must name; also
    /// the SNI sent.
    pub fn server_name(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// `host:port` to connect to (port 80, or 443 for https, when the URL names none).
    pub fn address(&self) -> String {
        let port = self
            .authority
            .port_u16()
            .unwrap_or(if self.tls { 443 } else { 80 });
        format!("{}:{port}", self.authority.host())
    }
}

/// One `protect` or `bypass` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// No `*`: the path itself and every path below it (`/a` covers `/a` and `/a/b`, not `/ab`);
    /// a pattern ending in `/` covers every path starting with it.
    Prefix(String),
    /// With `*`: the whole path must match, each `*` standing for any run of characters
    /// (including `/`), so `*.css` covers `/a/b.css` and `/checkout/*` covers `/checkout/x/y`.
    Glob(Vec<String>),
}

impl Pattern {
    /// Parses a config entry; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Pattern, &'static str> {
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

    /// Whether a path matches. The proxy passes it normalized (percent-decoded, `.`/`..`
    /// resolved, repeated slashes collapsed) so that a request cannot dodge a rule.
    pub fn matches(&self, path: &str) -> bool {
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

/// Every placeholder a template may use (README "Put rushgate in front of your shop").
/// Besides these, `{{t:key}}` is the page's string `key` in the request's language (any key of
/// `web/i18n.json`).
pub const PLACEHOLDERS: [&str; 18] = [
    "room",
    "state",
    "headline",
    "position",
    "ahead",
    "eta",
    "eta_p50",
    "eta_p90",
    "progress_percent",
    "message",
    "remaining",
    "poll_after_ms",
    "refresh_seconds",
    "return_url",
    "position_url",
    "script",
    "lang",
    "dir",
];

/// Checks that every `{{name}}` in a waiting-page template is one of [`PLACEHOLDERS`]; the
/// error names the unknown ones and lists the known.
pub fn check_template(text: &str) -> Result<(), String> {
    let mut unknown = Vec::new();
    fill(text, |name| {
        let translated = name.strip_prefix("t:").is_some_and(crate::i18n::has_key);
        if !PLACEHOLDERS.contains(&name) && !translated {
            unknown.push(name.to_string());
        }
        Some(String::new())
    });
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown placeholder {{{{{}}}}} (known: {}, and t:<string> for the page's strings)",
            unknown.join("}}, {{"),
            PLACEHOLDERS.join(", ")
        ))
    }
}

/// Replaces every `{{name}}` (spaces inside the braces allowed) with `value(name)`; names the
/// function does not know are left as they are, as is an unclosed `{{`.
pub fn fill(text: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len() + 512);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Problems with a room's proxy fields, each as `(field, problem)` relative to the room, in
/// field order: `upstream`, `protect`, `bypass`, `page_template` (the file is read and its
/// placeholders checked).
pub(super) fn check_room(room: &RoomConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let upstream = room.upstream.as_deref().map(Upstream::parse);
    if let Some(Err(e)) = &upstream {
        problems.push(("upstream".to_string(), e.to_string()));
    }
    if let Some(path) = &room.upstream_ca_file {
        if !matches!(&upstream, Some(Ok(Upstream::Http(url))) if url.tls()) {
            problems.push((
                "upstream_ca_file".to_string(),
                "is only used with an https:// upstream".to_string(),
            ));
        } else if let Err(e) = crate::tls::roots(Some(path), "upstream_ca_file") {
            problems.push(("upstream_ca_file".to_string(), e));
        }
    }
    for (field, list) in [("protect", &room.protect), ("bypass", &room.bypass)] {
        if room.upstream.is_none() && !list.is_empty() {
            problems.push((
                field.to_string(),
                "needs `upstream` (without it rushgate proxies nothing; use the gate endpoint)"
                    .to_string(),
            ));
        }
        for (i, raw) in list.iter().enumerate() {
            if let Err(e) = Pattern::parse(raw) {
                problems.push((format!("{field}[{i}]"), format!("`{raw}` {e}")));
            }
        }
    }
    if let Some(path) = &room.page_template {
        if let Err(e) = read_template(path) {
            problems.push(("page_template".to_string(), e));
        }
    }
    problems
}

/// Reads a waiting-page template file and checks its placeholders ([`check_template`]); the
/// text when both succeed. Validation and the proxy load templates through this one function.
pub fn read_template(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_template(&text)?;
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Paths here are already normalized, as the proxy passes them.
    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern)
            .map(|p| p.matches(path))
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
    fn bad_patterns_are_rejected() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("products").is_err());
        assert!(Pattern::parse("/a?b").is_err());
        assert!(Pattern::parse("/a b").is_err());
    }

    #[test]
    fn upstream_urls_are_checked() {
        assert!(UpstreamUrl::parse("http://127.0.0.1:3000").is_ok());
        assert!(UpstreamUrl::parse("http://shop.internal/").is_ok());
        let tls = UpstreamUrl::parse("https://shop.internal").unwrap();
        assert!(tls.tls());
        assert_eq!(tls.address(), "shop.internal:443");
        assert_eq!(
            UpstreamUrl::parse("https://[::1]:8443")
                .unwrap()
                .server_name(),
            "::1"
        );
        assert!(UpstreamUrl::parse("http://shop/base").is_err());
        assert!(UpstreamUrl::parse("ftp://shop").is_err());
        assert!(UpstreamUrl::parse("shop:3000").is_err());
        assert!(UpstreamUrl::parse("http://user:pw@shop").is_err());
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let err = check_template("<p>{{position}} {{ posiiton }}</p>").unwrap_err();
        assert!(err.contains("{{posiiton}}"), "{err}");
        assert_eq!(fill("a {{x}} {{y", |_| Some("1".into())), "a 1 {{y");
    }

    #[test]
    fn room_fields_are_checked_by_name() {
        let mut r = RoomConfig::with_id("a");
        r.protect = vec!["/x".into()];
        let problems = check_room(&r);
        assert_eq!(problems[0].0, "protect");
        r.upstream = Some("ftp://shop".into());
        r.bypass = vec!["nope".into()];
        r.page_template = Some("/nonexistent/page.html".into());
        let fields: Vec<String> = check_room(&r).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["upstream", "bypass[0]", "page_template"]);
    }
}
