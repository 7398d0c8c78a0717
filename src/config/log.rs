//! `[log]`: line format and the `tracing` filter, checked with `tracing_subscriber`'s own
//! filter parser.

use serde::{Deserialize, Serialize};

use super::Problem;

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human-readable) or `json` (one JSON object per line, for log collectors).
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, or per target such as
    /// `info,rushgate::request=warn` (drops the per-request lines). `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    /// `level` must parse as a `tracing` filter.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .is_err()
        {
            problems.push(Problem::new(
                "log.level",
                "must be a tracing filter such as info or warn,rushgate=debug",
            ));
        }
    }
}
