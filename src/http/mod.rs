//! The hyper service: router, handlers per area, body helpers, problem+json errors, and the
//! accept loop that serves a bound listener with graceful shutdown.

pub mod body;
pub mod error;
mod pass;
mod probes;
mod queue;
pub mod router;
mod sale;
mod serve;

pub use serve::{serve, Listener};
