//! What a scenario runs against: the node's addresses and, when known, its config, store,
//! Redis, pass key and processes.

use std::net::SocketAddr;
use std::sync::Arc;

use fred::prelude::Pool;
use rushgate::clock::now_ms;
use rushgate::config::Config;
use rushgate::pass::{PassIssuer, TicketSigner};
use rushgate::store::Store;

/// What a scenario runs against.
pub struct Target {
    /// Public listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The node's config, when given.
    pub config: Option<Config>,
    /// The store the node uses (bulk joins), when known.
    pub store: Option<Arc<dyn Store>>,
    /// The node's Redis, for readings.
    pub redis: Option<Pool>,
    /// Pass issuer with the node's key (purchase, coupon, proxy).
    pub passes: Option<PassIssuer>,
    /// The node's process id (RSS readings).
    pub pid: Option<u32>,
    /// Processes whose CPU time per request is reported, by name.
    pub cpu: Vec<(String, u32)>,
    /// No progress bars.
    pub quiet: bool,
}

impl Target {
    pub(crate) fn config(&self) -> anyhow::Result<&Config> {
        self.config
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this scenario needs --config (the node's config)"))
    }

    pub(crate) fn passes(&self) -> anyhow::Result<&PassIssuer> {
        self.passes
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this scenario needs --config (the pass key)"))
    }

    /// A pass of `room` for a new random identity, valid for an hour.
    pub fn mint_pass(&self, room: &str) -> anyhow::Result<String> {
        let now = now_ms() / 1000;
        let sub = TicketSigner::anonymous_identity();
        Ok(self.passes()?.issue(room, &sub, 1, now, now + 3600)?)
    }
}
