//! Queue rooms: the cached per-node room state, position arithmetic, ETA, and the pacer loop
//! that admits waiters through the store; the timeline (`schedule`) and scheduled drops
//! (pre-queue shuffle); an operator's controls (`control`); the admission rules of a
//! shopper's place (`place`); and the revocations a node has learned (`revoked`).

pub mod control;
pub mod drops;
mod eta;
pub mod pacer;
pub mod place;
mod revoked;
mod room;
pub mod schedule;
mod snapshot;

pub use eta::EtaEstimator;
pub use revoked::Revocations;
pub use room::{params_for, Eta, Room, Rooms, StockGate};
pub use snapshot::{Located, Rates, Snapshot};
