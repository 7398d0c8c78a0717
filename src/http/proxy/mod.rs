//! The reverse proxy on the public listener: for every path outside the API it decides, from
//! the rooms' `protect` and `bypass` rules, whether the request needs a pass, then forwards it to
//! the room's upstream (`http://…`, `https://…` or the built-in demo shop) or sends the shopper
//! to the queue.
//!
//! - `rules`: path normalization (the `protect`/`bypass` patterns are parsed by config).
//! - `forward`: header rewriting, streaming, timeouts.
//! - `pool`: kept-alive connections to each upstream (TLS for `https://`).
//! - `tunnel`: WebSocket and other upgrades, bytes copied both ways, a cap per upstream.
//! - `waiting`: auto-join, the waiting page / JSON body / redirect once admitted.
//! - `page`: the waiting-page template (built-in or the shop's own).
//! - `gate`: the `gate` endpoint for nginx `auth_request` and Envoy `ext_authz`.
//! - `demo`: the `builtin:demo` shop.
//!
//! A request with a pass is checked locally (signature, expiry, room): no store call.

mod demo;
mod forward;
mod gate;
mod handle;
mod page;
mod pool;
mod rules;
mod tunnel;
mod waiting;

use std::collections::HashMap;
use std::sync::Arc;

pub use forward::PASS_HEADER;
pub use gate::gate;
pub use handle::handle;
pub use rules::{canonical, PathRefused};
pub(crate) use rules::{percent_decode, percent_encode, query_param};
pub(crate) use waiting::is_local_path;
pub use waiting::wait;

use crate::config::{self, Config, Pattern, Problem};
use forward::Target;
use page::Template;

/// Largest total size of request headers (names + values) the proxy passes on; larger is 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Why the proxy could not be set up from a (validated) config: the room field at fault (a page
/// template that became unreadable since validation, say).
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct ProxyError {
    /// The field (`rooms[i].page_template`) and what is wrong with it.
    pub problem: Problem,
}

/// The proxy: routes of every room, each with its upstream's connections. Cloning is cheap.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Vec<Route>,
    pages: HashMap<String, Template>,
    builtin_page: Template,
}

/// One room's proxy settings.
struct Route {
    room: String,
    /// `rg_pass_{room}`, the cookie holding the room's pass.
    pass_cookie: String,
    upstream: Upstream,
    protect: Vec<Pattern>,
    bypass: Vec<Pattern>,
    /// Rules match the lower-cased path (`case_insensitive`); the patterns are lower-cased too.
    case_insensitive: bool,
    /// `;` path parameters accepted (`allow_path_parameters`).
    parameters: bool,
}

enum Upstream {
    Http(Target),
    Demo,
}

/// What to do with a path outside the API.
enum Decision<'a> {
    /// Needs a pass of the route's room.
    Protected(&'a Route),
    /// Goes to the route's upstream as it is.
    Forward(&'a Route),
    /// No room has an upstream.
    Nowhere,
}

impl Proxy {
    /// Builds the routes and loads the page templates of a validated config.
    pub fn from_config(config: &Config) -> Result<Proxy, ProxyError> {
        Self::build(config, None)
    }

    /// Like [`Proxy::from_config`], for a reload: an upstream that `old` also had, with the same
    /// `max_tunnels`, keeps counting the tunnels open through it (they stay open across the
    /// reload), so a reload never lets more than `max_tunnels` be open at once.
    pub fn from_config_after(config: &Config, old: &Proxy) -> Result<Proxy, ProxyError> {
        Self::build(config, Some(old))
    }

    fn build(config: &Config, old: Option<&Proxy>) -> Result<Proxy, ProxyError> {
        let mut routes = Vec::new();
        let mut pages = HashMap::new();
        for (index, room) in config.rooms.iter().enumerate() {
            let err = |field: &str, message: String| ProxyError {
                problem: Problem::new(format!("rooms[{index}].{field}"), message),
            };
            if let Some(path) = &room.page_template {
                pages.insert(
                    room.id.clone(),
                    Template::load(path).map_err(|p| err("page_template", p))?,
                );
            }
            let Some(raw) = &room.upstream else {
                continue;
            };
            let upstream =
                match config::Upstream::parse(raw).map_err(|p| err("upstream", p.to_string()))? {
                    config::Upstream::Demo => Upstream::Demo,
                    config::Upstream::Http(url) => Upstream::Http(
                        Target::new(
                            &url,
                            room.upstream_ca_file.as_deref(),
                            (
                                room.max_tunnels,
                                std::time::Duration::from_secs(room.tunnel_idle_seconds),
                            ),
                        )
                        .map_err(|e| err("upstream", e))?,
                    ),
                };
            let patterns = |list: &[String], field| {
                list.iter()
                    .map(|p| {
                        let p = if room.case_insensitive {
                            p.to_ascii_lowercase()
                        } else {
                            p.clone()
                        };
                        Pattern::parse(&p).map_err(|e| err(field, format!("`{p}` {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let mut upstream = upstream;
            if let (Upstream::Http(target), Some(old)) = (&mut upstream, old) {
                let kept = old.inner.routes.iter().find_map(|r| match &r.upstream {
                    Upstream::Http(t)
                        if t.authority == target.authority && t.tunnels.1 == target.tunnels.1 =>
                    {
                        Some(t.tunnels.clone())
                    }
                    _ => None,
                });
                if let Some(kept) = kept {
                    target.tunnels = kept;
                }
            }
            routes.push(Route {
                room: room.id.clone(),
                pass_cookie: crate::http::credentials::pass_cookie(&room.id),
                upstream,
                protect: patterns(&room.protect, "protect")?,
                bypass: patterns(&room.bypass, "bypass")?,
                case_insensitive: room.case_insensitive,
                parameters: room.allow_path_parameters,
            });
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                routes,
                pages,
                builtin_page: Template::builtin(),
            }),
        })
    }

    /// The waiting-page template of a room (its `page_template`, else the built-in page).
    pub(crate) fn page(&self, room: &str) -> &Template {
        self.inner
            .pages
            .get(room)
            .unwrap_or(&self.inner.builtin_page)
    }

    /// A path (canonical, see [`rules::canonical`]) is protected by the first room whose
    /// `protect` matches it and whose `bypass` does not. Anything else goes to the first room
    /// whose rules mention the path, else to the first room with an upstream. Rooms with
    /// `case_insensitive` match the lower-cased path.
    fn decide(&self, path: &str) -> Decision<'_> {
        let routes = &self.inner.routes;
        // Paths are ASCII (anything else is percent-encoded): lower-casing is per byte, and
        // most paths have no upper-case letter to copy for.
        let lower = if path.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(path.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(path)
        };
        let seen = |r: &Route| {
            if r.case_insensitive {
                &*lower
            } else {
                path
            }
        };
        let protects = |r: &Route| r.protect.iter().any(|p| p.matches(seen(r)));
        let bypasses = |r: &Route| r.bypass.iter().any(|p| p.matches(seen(r)));
        if let Some(r) = routes.iter().find(|r| protects(r) && !bypasses(r)) {
            return Decision::Protected(r);
        }
        match routes
            .iter()
            .find(|r| bypasses(r) || protects(r))
            .or_else(|| routes.first())
        {
            Some(r) => Decision::Forward(r),
            None => Decision::Nowhere,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::RoomConfig;

    fn proxy(rooms: &[(&str, &str, &[&str], &[&str])]) -> Proxy {
        let mut config = Config::default();
        for (id, upstream, protect, bypass) in rooms {
            let mut r = RoomConfig::with_id(id);
            r.upstream = Some(upstream.to_string());
            r.protect = protect.iter().map(|s| s.to_string()).collect();
            r.bypass = bypass.iter().map(|s| s.to_string()).collect();
            config.rooms.push(r);
        }
        Proxy::from_config(&config).unwrap()
    }

    fn decided(p: &Proxy, path: &str) -> String {
        match p.decide(&rules::canonical(path, false).unwrap()) {
            Decision::Protected(r) => format!("protect:{}", r.room),
            Decision::Forward(r) => format!("forward:{}", r.room),
            Decision::Nowhere => "nowhere".into(),
        }
    }

    #[test]
    fn protect_bypass_and_default_routes() {
        let p = proxy(&[
            (
                "a",
                "builtin:demo",
                &["/products/a", "/checkout/*"],
                &["*.css", "/health"],
            ),
            ("b", "http://127.0.0.1:1", &["/products/b"], &[]),
        ]);
        assert_eq!(decided(&p, "/products/a"), "protect:a");
        assert_eq!(decided(&p, "/products//a/"), "protect:a");
        assert_eq!(decided(&p, "/checkout/pay"), "protect:a");
        assert_eq!(decided(&p, "/checkout/app.css"), "forward:a");
        assert_eq!(decided(&p, "/products/b/x"), "protect:b");
        assert_eq!(decided(&p, "/about"), "forward:a");
        assert_eq!(decided(&p, "/PRODUCTS/A"), "protect:a");
        assert_eq!(decided(&p, "/Checkout/App.CSS"), "forward:a");
        assert_eq!(decided(&proxy(&[]), "/about"), "nowhere");
    }
}
