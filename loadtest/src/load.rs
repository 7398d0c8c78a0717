//! The closed-loop driver: `conns` workers, each on its own keep-alive connection, send requests
//! back to back for a bounded time (and at most `max_requests`), recording every answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Conn;
use crate::stats::{Live, Recorder, Summary};

/// How much load, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Connections (one worker each).
    pub conns: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time before measuring (connections open, caches warm); not recorded.
    pub warmup: Duration,
    /// Stop after this many measured requests.
    pub max_requests: u64,
}

/// Builds the `i`-th request of worker `w`.
pub type MakeRequest = dyn Fn(usize, u64) -> anyhow::Result<Request<Full<Bytes>>> + Send + Sync;

/// A progress bar over `len` units with a message, hidden when stderr is not a terminal or
/// `quiet` is set.
pub fn progress(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// Runs the plan against `addr`; `name` labels the summary.
pub async fn run(
    name: &str,
    addr: SocketAddr,
    plan: Plan,
    make: Arc<MakeRequest>,
    quiet: bool,
) -> Summary {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let budget = Arc::new(AtomicU64::new(plan.max_requests));
    let mut workers = Vec::with_capacity(plan.conns);
    for w in 0..plan.conns {
        let (live, make, budget) = (live.clone(), make.clone(), budget.clone());
        workers.push(tokio::spawn(async move {
            let mut rec = Recorder::new(measure_from, live);
            let mut conn = Conn::new(addr);
            let mut i = 0u64;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let measuring = now >= measure_from;
                if measuring && budget.fetch_sub(1, Ordering::Relaxed) == 0 {
                    budget.store(0, Ordering::Relaxed);
                    break;
                }
                let Ok(req) = make(w, i) else { break };
                i += 1;
                let sent = Instant::now();
                let status = conn.send(req).await.ok().map(|a| a.status.as_u16());
                if measuring {
                    rec.record(sent, status);
                } else if status.is_none() {
                    // Back off a little while the target is not up yet.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            rec
        }));
    }
    let bar = progress(plan.duration.as_secs().max(1), quiet);
    bar.set_message(format!("{name}: warming up"));
    let ticker = {
        let (bar, live, name) = (bar.clone(), live.clone(), name.to_string());
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = live.done.load(Ordering::Relaxed);
                let errors = live.errors.load(Ordering::Relaxed);
                bar.set_position(measure_from.elapsed().as_secs());
                bar.set_message(format!("{name}: {} req/s, {errors} errors", done - last));
                last = done;
            }
        })
    };
    let mut total = Recorder::new(measure_from, live.clone());
    for w in workers {
        if let Ok(rec) = w.await {
            total.merge(rec);
        }
    }
    let end = Instant::now().min(deadline);
    ticker.abort();
    bar.finish_and_clear();
    total.summary(name, end.saturating_duration_since(measure_from))
}
