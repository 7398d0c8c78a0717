//! The integration suite: real HTTP against in-process rushgate servers, real redis-servers.

mod admin;
mod drops;
mod events;
mod groups;
mod identity;
mod limits;
mod pow;
mod queue_basics;
mod reload;
mod sales;
pub mod webhooks;
