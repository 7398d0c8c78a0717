//! Operating concerns: metrics, logs and request ids (and, in later issues, admin API, rate
//! limits, reload).

pub mod logging;
pub mod metrics;
pub mod request_id;
pub mod webhooks;
