//! Queue rooms: the cached per-node room state, position arithmetic, ETA, and the pacer loop
//! that admits waiters through the store; the timeline (`schedule`) and scheduled drops
//! (pre-queue shuffle); an operator's controls (`control`); and the admission rules of a
//! shopper's place (`place`).

pub mod control;
pub mod drops;
mod eta;
pub mod pacer;
pub mod place;
mod room;
pub mod schedule;
mod snapshot;

pub use eta::EtaEstimator;
pub use room::{params_for, Eta, Room, Rooms, StockGate};
pub use snapshot::{Located, Rates, Snapshot};
