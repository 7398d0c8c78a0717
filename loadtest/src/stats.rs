//! Latency and outcome recording: one [`Recorder`] per worker (no shared locks on the hot
//! path), merged at the end into a [`Summary`]; shared atomic counters feed the progress bar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in microseconds (longer ones are clamped).
const MAX_MICROS: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_MICROS, 3) {
        Ok(h) => h,
        // Constant bounds (1 µs ..= 60 s, three significant digits) that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// Counters shared by every worker, read by the progress bar.
#[derive(Default)]
pub struct Live {
    /// Requests answered.
    pub done: AtomicU64,
    /// Requests that failed (transport error or 5xx).
    pub errors: AtomicU64,
}

/// Per-worker recording of one kind of request.
pub struct Recorder {
    start: Instant,
    live: Arc<Live>,
    hist: Histogram<u64>,
    per_second: Vec<Histogram<u64>>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl Recorder {
    /// A recorder whose timeline starts at `start`.
    pub fn new(start: Instant, live: Arc<Live>) -> Recorder {
        Recorder {
            start,
            live,
            hist: histogram(),
            per_second: Vec::new(),
            statuses: BTreeMap::new(),
            transport_errors: 0,
        }
    }

    /// Records one answered request.
    pub fn record(&mut self, sent: Instant, status: Option<u16>) {
        let now = Instant::now();
        let micros = now
            .duration_since(sent)
            .as_micros()
            .clamp(1, MAX_MICROS as u128) as u64;
        let _ = self.hist.record(micros);
        let second = now.duration_since(self.start).as_secs() as usize;
        while self.per_second.len() <= second {
            self.per_second.push(histogram());
        }
        if let Some(h) = self.per_second.get_mut(second) {
            let _ = h.record(micros);
        }
        self.live.done.fetch_add(1, Ordering::Relaxed);
        match status {
            Some(s) => {
                *self.statuses.entry(s).or_default() += 1;
                if s >= 500 {
                    self.live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.transport_errors += 1;
                self.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds another recorder's figures to this one.
    pub fn merge(&mut self, other: Recorder) {
        let _ = self.hist.add(&other.hist);
        for (i, h) in other.per_second.into_iter().enumerate() {
            while self.per_second.len() <= i {
                self.per_second.push(histogram());
            }
            if let Some(mine) = self.per_second.get_mut(i) {
                let _ = mine.add(&h);
            }
        }
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }

    /// The figures of everything recorded over `elapsed`.
    pub fn summary(&self, name: &str, elapsed: Duration) -> Summary {
        let h = &self.hist;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let requests = h.len();
        let server_errors = self
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| *n)
            .sum::<u64>();
        Summary {
            name: name.to_string(),
            requests,
            seconds: elapsed.as_secs_f64(),
            req_per_s: requests as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
            statuses: self
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors: self.transport_errors + server_errors,
            timeline: self
                .per_second
                .iter()
                .enumerate()
                .map(|(i, h)| Second {
                    second: i as u64,
                    requests: h.len(),
                    p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect(),
        }
    }
}

/// Figures of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What was measured.
    pub name: String,
    /// Requests answered (any status) or failed.
    pub requests: u64,
    /// Measured time.
    pub seconds: f64,
    /// Throughput.
    pub req_per_s: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Transport errors and 5xx answers.
    pub errors: u64,
    /// Per-second throughput and latency.
    pub timeline: Vec<Second>,
}

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Requests answered in that second.
    pub requests: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}
