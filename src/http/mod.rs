//! The hyper service: router, handlers per area, body helpers, problem+json errors, and the
//! accept loop that serves a bound listener with graceful shutdown.

mod admin;
pub mod body;
pub mod credentials;
pub mod error;
pub mod json;
pub mod limits;
mod pass;
pub mod place;
mod probes;
pub mod proxy;
pub(crate) mod queue;
pub mod router;
mod sale;
mod serve;
pub mod state;

pub use serve::{serve, Listener};
pub use state::AppState;
