//! The one integration-test binary: real HTTP against in-process rushgate servers, real
//! redis-servers (each test starts its own), real nginx, Prometheus and upstream shops. One
//! harness, compiled once, shared by every suite.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)] // helpers are shared; not every one is used by every suite
mod harness;

mod api;
#[allow(dead_code)] // a test PKI: the TLS suites use different parts of it
mod certs;
mod conformance;
mod crowd;
mod edges;
mod layers;
mod ops;
mod proxy;
#[allow(dead_code)] // helpers for the store-topology tests; the self-tests use most of them
mod topology;
