//! Operating concerns: metric names and handles, logs, request ids.

pub mod logging;
pub mod metrics;
pub mod request_id;
