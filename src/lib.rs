//! rushgate: a virtual waiting room and flash-sale engine.
//!
//! Code map, lowest layer first (see ARCHITECTURE.md for the layer rule and the invariants):
//! - [`id`], [`clock`]: typed ids parsed at the edge (the one id rule); the wall clock.
//! - [`i18n`]: the languages of the waiting page (strings from `web/i18n.json`, ETA phrases
//!   and plural forms, `Accept-Language` negotiation).
//! - [`tls`]: rustls settings of every connection made or accepted (CA files or system roots,
//!   client certificates, the listener's reloadable certificate).
//! - [`config`]: typed TOML config, a file per section with its validation, env overrides.
//! - [`pass`]: queue tickets (HMAC), signing keys and JWKS, admission passes (EdDSA/ES256 JWT).
//! - [`ops`]: metric names and handles, logging, request ids.
//! - [`store`]: the only code that talks to storage: the `Store` / `SaleStore` traits, the key
//!   table, Redis (Lua) and the embedded twin.
//! - [`queue`]: rooms on a node (cached state, position arithmetic, ETA, pacer), schedules and
//!   drops, operator controls, the admission rules of a shopper's place, and proof of work
//!   before a new place (challenges, pressure).
//! - [`sale`]: sales and coupon campaigns on a node, the purchase and coupon rules, the keeper.
//! - [`webhooks`]: signed operator alerts, delivered once per cluster.
//! - [`http`]: the hyper service: state, credentials, router, handlers, problem+json errors,
//!   accept loop, and the reverse proxy to the shop (`http::proxy`).
//! - [`supervisor`]: the room and sale loops, and hot reload.
//! - [`app`]: wiring of store, rooms, listeners and background loops; graceful shutdown.
//! - [`cli`]: the command line (`serve`, `check-config`, `keygen`, `pass verify`, `sale`,
//!   `drop verify`) and `rushgate ctl`, the operator CLI over the admin API.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod i18n;
pub mod id;
pub mod ops;
pub mod pass;
pub mod queue;
pub mod sale;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod webhooks;
