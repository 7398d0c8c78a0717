//! Prometheus metrics: one process-wide recorder (the `metrics` facade allows only one), served
//! by the admin listener's `/metrics`; the exporter spawns nothing, so upkeep runs here.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder on first call and returns its handle (the same on every call,
/// so several servers in one process, as in tests, share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Runs the exporter's upkeep (histogram buckets draining) every few seconds until shutdown.
pub async fn upkeep(handle: PrometheusHandle, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}
