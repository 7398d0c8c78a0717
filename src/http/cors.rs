//! CORS for the JSON API: a storefront on another origin may call it with credentials (its
//! cookies) when its origin is listed in `server.cors_origins`, exactly (no wildcard: a
//! credentialed answer must name one origin).
//!
//! Guarantees: a preflight from a listed origin is answered 204 with that origin, credentials
//! allowed, the API's methods and the request headers it asked for when each is one the API
//! reads; one from any other origin, or asking for another method or header, is refused with a
//! 403 that names what is not allowed (and carries no CORS header, so the browser stops). An
//! ordinary API answer names the origin only when it is listed. Every API answer varies by
//! `Origin` once any origin is listed, so a shared cache never hands one origin's answer to
//! another. Paths outside the API (the shop's) are not touched.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::{full, Body};
use super::error::ApiError;
use crate::config::ServerConfig;

/// Methods the API answers cross-origin.
const METHODS: &str = "GET, POST";
/// Request headers a cross-origin caller may send (the ones the API reads), lower case.
const HEADERS: [&str; 5] = [
    "content-type",
    "authorization",
    "accept",
    "accept-language",
    "x-request-id",
];
/// Response headers a cross-origin caller may read besides the simple ones.
const EXPOSE: &str = "retry-after, x-request-id, location";
/// How long a browser may reuse a preflight answer.
const MAX_AGE: &str = "600";

/// Whether `origin` is one of `server.cors_origins`.
fn listed(server: &ServerConfig, origin: &HeaderValue) -> bool {
    server
        .cors_origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
}

/// Whether `headers` make `OPTIONS` a CORS preflight (an `Origin` and the method asked for).
pub fn is_preflight(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight (see the module doc).
pub fn preflight(server: &ServerConfig, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("null"));
    if !listed(server, &origin) {
        return Err(ApiError::CorsRefused(format!(
            "origin `{}` is not in server.cors_origins",
            String::from_utf8_lossy(origin.as_bytes())
        )));
    }
    let method = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    if !matches!(method.as_str(), "GET" | "POST" | "HEAD") {
        return Err(ApiError::CorsRefused(format!(
            "method `{method}` is not offered cross-origin (GET, POST)"
        )));
    }
    let mut allowed = Vec::new();
    for value in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let Ok(list) = value.to_str() else {
            return Err(ApiError::CorsRefused(
                "Access-Control-Request-Headers is not ASCII".into(),
            ));
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            if !HEADERS.contains(&name.as_str()) {
                return Err(ApiError::CorsRefused(format!(
                    "request header `{name}` is not read by the API (allowed: {})",
                    HEADERS.join(", ")
                )));
            }
            allowed.push(name);
        }
    }
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    if !allowed.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    Ok(resp)
}

/// Adds the CORS headers of an ordinary API answer to a request from `origin` (when listed),
/// and `Vary: Origin` whenever cross-origin calls are configured.
pub fn decorate(server: &ServerConfig, origin: Option<&HeaderValue>, resp: &mut Response<Body>) {
    if server.cors_origins.is_empty() {
        return;
    }
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = origin.filter(|o| listed(server, o)) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.insert(
        HeaderName::from_static("access-control-expose-headers"),
        HeaderValue::from_static(EXPOSE),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server() -> ServerConfig {
        ServerConfig {
            cors_origins: vec!["https://shop.example".into()],
            ..ServerConfig::default()
        }
    }

    fn asking(origin: &str, method: &str, headers: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if !headers.is_empty() {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(headers).unwrap(),
            );
        }
        h
    }

    #[test]
    fn listed_origin_gets_exactly_itself_with_credentials() {
        let resp = preflight(
            &server(),
            &asking(
                "https://shop.example",
                "POST",
                "Content-Type, authorization",
            ),
        )
        .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, authorization"
        );
    }

    #[test]
    fn others_are_refused_by_name() {
        let s = server();
        for (origin, method, headers, needle) in [
            ("https://evil.example", "POST", "", "evil.example"),
            ("https://shop.example.evil", "POST", "", "shop.example.evil"),
            ("http://shop.example", "POST", "", "http://shop.example"),
            ("https://shop.example", "DELETE", "", "DELETE"),
            ("https://shop.example", "POST", "x-admin", "x-admin"),
        ] {
            let err = preflight(&s, &asking(origin, method, headers)).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn answers_name_only_listed_origins_and_always_vary() {
        let s = server();
        let mut resp = Response::new(full("{}"));
        decorate(
            &s,
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut resp,
        );
        assert!(!resp
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(resp.headers()[header::VARY], "origin");
        let mut resp = Response::new(full("{}"));
        decorate(
            &s,
            Some(&HeaderValue::from_static("https://shop.example")),
            &mut resp,
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        let mut resp = Response::new(full("{}"));
        decorate(&ServerConfig::default(), None, &mut resp);
        assert!(resp.headers().is_empty());
    }
}
