//! The integration suite: real HTTP against in-process rushgate servers, real redis-servers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod admin;
mod drops;
#[allow(dead_code)] // helpers are shared; not every one is used by every test file
mod harness;
mod limits;
mod queue_basics;
mod reload;
mod sales;
mod webhooks;
