//! The hyper service: the state every request runs on, credentials (cookies, bearer, peer), CORS,
//! body and JSON helpers, problem+json errors, rate limits, proof-of-work answers and the
//! solver script, the router and a handler per area
//! (each parses the request, calls the domain and renders the answer), the reverse proxy to the
//! shop, and the accept loop that serves a bound listener with graceful shutdown.

pub mod activity;
mod admin;
pub mod body;
pub mod cors;
pub mod credentials;
pub mod error;
pub mod events;
pub mod json;
pub mod limits;
mod pass;
pub mod place;
pub mod pow;
mod probes;
pub mod proxy;
pub(crate) mod queue;
pub mod router;
mod sale;
mod serve;
pub mod state;

pub use serve::{serve, ConnectionRules, Listener};
pub use state::AppState;
