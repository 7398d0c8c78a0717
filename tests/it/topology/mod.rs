//! Real Redis topologies for rushgate's store tests, and the faults to break them with: a
//! TLS-only server with test-made certificates, a Sentinel set, a Redis Cluster, a TCP proxy
//! that delays, resets or partitions, and SIGSTOP/SIGCONT for a server. Every helper starts
//! private processes on ports from `free_port()`, keeps its files in temp dirs, and kills what
//! it started when dropped. `selftest` proves each one without rushgate.

mod cluster;
mod fault;
mod process;
mod sentinel;
mod tls;

mod capped;
mod faults;
mod ghosts;
mod selftest;
mod stores;

pub use crate::certs::Certs;
pub use cluster::Cluster;
pub use fault::FaultProxy;
pub use process::{pause, resume};
pub use sentinel::SentinelSet;
pub use tls::{ClientAuth, TlsRedis};
