//! The Redis store (fred): the only code that names a fred type. [`RedisStore`] implements
//! [`Store`](crate::store::Store) (`rooms.rs`) and [`SaleStore`](crate::store::SaleStore)
//! (`sale.rs`) with one Lua script per multi-key operation (`lua/*.lua`, each opening with its
//! KEYS/ARGV/returns header); `client.rs` is the pool and the one path every command takes,
//! `batch.rs` coalesces concurrent calls of a room or sale into one script run, `reply.rs`
//! decodes replies.

mod batch;
mod client;
mod reply;
mod rooms;
mod sale;

pub use client::{RedisStore, TlsFiles};
