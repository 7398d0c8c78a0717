//! Log output: `[log] format` (`text` for people, `json` for collectors: one JSON object per
//! line) and `[log] level` (a `tracing` filter such as `info` or `info,rushgate::request=warn`;
//! `RUST_LOG`, when set, wins). Every request logs one line with target [`REQUEST_TARGET`].

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Target of the one-line-per-request log events (filter it with `rushgate::request=warn`).
pub const REQUEST_TARGET: &str = "rushgate::request";

/// The filter for `config`: `RUST_LOG` when set and valid, else `config.level`, else `info`.
pub fn filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing `format` through `filter` to `writer` (tests pass a buffer; [`init`]
/// stderr). `ansi` colours the text format only.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the process-wide subscriber on stderr (colours only when stderr is a terminal).
/// A second call keeps the first subscriber.
pub fn init(config: &LogConfig) {
    let ansi = std::io::stderr().is_terminal();
    let sub = subscriber(config.format, filter(config), std::io::stderr, ansi);
    let _ = tracing::subscriber::set_global_default(sub);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let sub = subscriber(format, EnvFilter::new("info"), move || sink.clone(), false);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("request", request_id = %"abc");
            let _entered = span.enter();
            tracing::info!(target: REQUEST_TARGET, status = 200u16, "request");
            tracing::debug!("filtered out at info");
        });
        let bytes = buffer.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn json_format_writes_one_object_per_line() {
        let out = capture(LogFormat::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_default();
        assert_eq!(v["level"], "INFO", "{out}");
        assert_eq!(v["target"], REQUEST_TARGET, "{out}");
        assert_eq!(v["status"], 200, "{out}");
        assert_eq!(v["span"]["request_id"], "abc", "{out}");
    }

    #[test]
    fn text_format_is_not_json() {
        let out = capture(LogFormat::Text);
        assert!(out.contains("request_id=abc"), "{out}");
        assert!(serde_json::from_str::<serde_json::Value>(out.trim()).is_err());
    }
}
