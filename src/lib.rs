//! rushgate: a virtual waiting room and flash-sale engine.
//!
//! Code map (see ARCHITECTURE.md for the invariants):
//! - [`cli`]: the command line (`serve`, `check-config`, `keygen`, `pass verify`, `sale`,
//!   `drop verify`) and `rushgate ctl`, the operator CLI over the admin API.
//! - [`config`]: typed TOML config with env overrides and validation naming each field.
//! - [`app`]: wiring of store, rooms, listeners and background loops; graceful shutdown.
//! - [`store`]: the only code that talks to storage: the `Store` trait, Redis (Lua) and embedded.
//! - [`queue`]: rooms on a node: cached state, position arithmetic, ETA, the pacer loop.
//! - [`sale`]: sales (cached stock, expiry sweeper) and coupon campaigns.
//! - [`pass`]: admission passes (Ed25519/ES256 JWT, JWKS) and queue tickets (HMAC).
//! - [`http`]: the hyper service: router, handlers, problem+json errors, accept loop, and the
//!   reverse proxy to the shop (`http::proxy`: rules, forwarding, waiting page, gate, demo shop).
//! - [`ops`]: metrics and other operating concerns.
//! - [`supervisor`]: the room and sale loops, and hot reload.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod id;
pub mod ops;
pub mod pass;
pub mod queue;
pub mod sale;
pub mod store;
pub mod supervisor;
pub mod webhooks;
