//! The hyper service: router, handlers per area, body helpers, problem+json errors, and the
//! accept loop that serves a bound listener with graceful shutdown.

mod admin;
pub mod body;
pub mod error;
pub mod limits;
mod pass;
mod probes;
pub(crate) mod queue;
pub mod router;
mod sale;
mod serve;

pub use serve::{serve, Listener, PeerAddr};
