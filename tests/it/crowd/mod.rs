//! Crowd-scale tests: fairness under thousands of concurrent shoppers on two nodes, the store
//! command and memory budgets, event streams by the thousand, and behaviour through a Redis
//! outage and a graceful shutdown.
//! Every test starts its own redis-server(s); none touches the machine's shared Redis.

use crate::harness;

mod budget;
mod fairness;
mod outage;
mod streams;
mod transfer;

use harness::RedisServer;

/// The sequence number a ticket carries (`{room}.{id}.{seq}.{iat}.{pos}.{sig}`).
pub fn seq_of(ticket: &str) -> u64 {
    ticket
        .split('.')
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in ticket {ticket:?}"))
}

/// The identity a ticket carries (the store's queue member).
pub fn identity_of(ticket: &str) -> String {
    ticket
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("no identity in ticket {ticket:?}"))
        .to_string()
}

/// The Redis key `rg:{room}:<name>`.
pub fn key(room: &str, name: &str) -> String {
    format!("rg:{{{room}}}:{name}")
}

/// A numeric field of the room's `meta` hash (0 when absent).
pub fn meta(redis: &RedisServer, room: &str, field: &str) -> u64 {
    redis
        .cli(&["HGET", &key(room, "meta"), field])
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A redis-cli reply parsed as a number (0 when empty).
pub fn cli_u64(redis: &RedisServer, args: &[&str]) -> u64 {
    let out = redis.cli(args);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("redis-cli {args:?} gave {out:?}"))
}
