//! Queue rooms: the cached per-node room state, position arithmetic, ETA, and the pacer loop
//! that admits waiters through the store; the timeline (`schedule`) and scheduled drops
//! (pre-queue shuffle); an operator's controls (`control`); the admission rules of a
//! shopper's place (`place`); groups of rooms a shopper waits in at once (`group`); the room's
//! message to its waiters (`message`); the revocations
//! a node has learned (`revoked`); the sessions it claimed, answered from memory
//! (`sessions`); and proof of
//! work before a new place (`pow` challenges, the `pressure` that sets their difficulty).

pub mod control;
pub mod drops;
mod eta;
pub mod group;
pub mod message;
mod outage;
pub mod pacer;
pub mod place;
pub mod pow;
mod pressure;
mod revoked;
mod room;
pub mod schedule;
mod sessions;
mod snapshot;

pub use eta::EtaEstimator;
pub use outage::{LeaseView, Outage, LEASE_RENEW_MS};
pub use pressure::{PowPolicy, Pressure, FREE_JOINS_PER_ADDRESS, MAX_ADDRESSES};
pub use revoked::Revocations;
pub use room::{params_for, Eta, Room, Rooms, StockGate, RETIRED};
pub use sessions::{SessionPasses, MAX_REMEMBERED};
pub use snapshot::{Located, Rates, Snapshot, SnapshotView};
