//! Operating concerns: metrics (and, in later issues, admin API, rate limits, reload).

pub mod metrics;
