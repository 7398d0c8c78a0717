//! Scenario files (`loadtest/scenarios/*.toml`): what to run, how many connections, for how
//! long. Every run is bounded in time and request count; `--set key=value` overrides a field.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a scenario exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// N shoppers bulk-joined, M connections polling positions with tickets.
    Poll,
    /// `tickets` shoppers admitted at once (a room with room for them), their passes picked up
    /// by a first poll, then M connections polling those admitted tickets (a native app, a
    /// second tab: no pass presented).
    PollAdmitted,
    /// New anonymous joins.
    Join,
    /// Purchases with passes (stock large enough never to sell out).
    Purchase,
    /// Coupon claims with passes.
    Coupon,
    /// A protected path with a pass, forwarded to the room's upstream.
    Proxy,
    /// Plain GETs of `path` (baselines: nginx, `baseline hello`, the bare upstream).
    Get,
    /// The whole event: arrivals, polling, abandoning, buying; checked for correctness.
    Drop,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// What to run.
    pub kind: Kind,
    /// Room of the rushgate config the scenario uses.
    pub room: String,
    /// Sale (purchase, drop).
    pub sale: String,
    /// Coupon campaign (coupon, drop).
    pub coupon: String,
    /// Path for `get` and `proxy`.
    pub path: String,
    /// Connections (closed-loop workers).
    pub conns: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Seconds of load before measuring.
    pub warmup_s: f64,
    /// Most measured requests.
    pub max_requests: u64,
    /// `poll`: shoppers bulk-joined through the store before polling.
    pub waiting: u64,
    /// `poll`: distinct tickets the pollers use (spread over the line).
    pub tickets: u64,
    /// `drop` parameters.
    pub drop: DropPlan,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            kind: Kind::Get,
            room: "bench".into(),
            sale: "bench-sale".into(),
            coupon: "bench-coupons".into(),
            path: "/".into(),
            conns: 64,
            duration_s: 10.0,
            warmup_s: 1.0,
            max_requests: 50_000_000,
            waiting: 0,
            tickets: 10_000,
            drop: DropPlan::default(),
        }
    }
}

/// The drop: an arrival curve (a spike, then a tail), shoppers polling at the `poll_after_ms`
/// they are told, some abandoning, the admitted ones buying.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropPlan {
    /// Shoppers in all.
    pub shoppers: u64,
    /// Share arriving in the spike.
    pub spike_share: f64,
    /// Length of the spike, seconds.
    pub spike_s: f64,
    /// Length of the tail after the spike, seconds.
    pub tail_s: f64,
    /// Share of shoppers who stop polling at a random moment (and never come back).
    pub abandon_share: f64,
    /// Share of abandoners who say so (`leave`) instead of going silent.
    pub leave_share: f64,
    /// Whether admitted shoppers claim a coupon.
    pub coupons: bool,
    /// Upper bound on any `poll_after_ms` the server asks for (keeps the run short).
    pub max_poll_ms: u64,
    /// Hard end of the event, seconds from the first arrival: shoppers still waiting then are
    /// "never served".
    pub deadline_s: f64,
    /// Shoppers in flight at once (each holds a connection while it waits).
    pub max_in_flight: usize,
    /// Connections shared by all shoppers.
    pub conns: usize,
}

impl Default for DropPlan {
    fn default() -> Self {
        DropPlan {
            shoppers: 2_000,
            spike_share: 0.7,
            spike_s: 1.0,
            tail_s: 3.0,
            abandon_share: 0.1,
            leave_share: 0.5,
            coupons: true,
            max_poll_ms: 1_000,
            deadline_s: 60.0,
            max_in_flight: 20_000,
            conns: 256,
        }
    }
}

impl Scenario {
    /// Reads a scenario file and applies `key=value` overrides (TOML values; dotted keys reach
    /// into `drop`, e.g. `drop.shoppers=100000`).
    pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set {o}: expected key=value"))?;
            let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
                Err(_) => toml::Value::String(value.into()),
            };
            let mut table = &mut doc;
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().unwrap_or(key);
            for p in parts {
                table = table
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| anyhow::anyhow!("--set {o}: {p} is not a table"))?;
            }
            table.insert(last.to_string(), value);
        }
        let scenario: Scenario = doc
            .try_into()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if scenario.conns == 0 || scenario.duration_s <= 0.0 {
            anyhow::bail!("{}: conns and duration_s must be positive", path.display());
        }
        Ok(scenario)
    }
}
